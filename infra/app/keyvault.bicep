// Key Vault (RBAC mode) holding the app's secrets; app settings point at them with Key Vault
// references, resolved by the platform with the user-assigned identity (Key Vault Secrets User).
// Secret names use hyphens: Key Vault does not allow underscores.
param name string
param location string = resourceGroup().location
param tags object = {}
@secure()
param credentialsKey string
@secure()
param credentialsKeysPrevious string = ''
@secure()
param oauthClientSecret string = ''
@description('True: no public network access; the app reaches the vault through a private endpoint (network.bicep).')
param privateNetworking bool = false

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // A deleted vault (and CREDENTIALS_KEY with it) stays recoverable for the retention period:
    // nobody, not even an owner, can purge it early. Irreversible once set, as intended.
    enablePurgeProtection: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource credentialsKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'CREDENTIALS-KEY'
  properties: {
    value: credentialsKey
    contentType: 'base64, 32 bytes (AES-256-GCM key)'
  }
}

resource credentialsKeysPreviousSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(credentialsKeysPrevious)) {
  parent: vault
  name: 'CREDENTIALS-KEYS-PREVIOUS'
  properties: {
    value: credentialsKeysPrevious
    contentType: 'comma-separated base64 keys'
  }
}

resource oauthClientSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(oauthClientSecret)) {
  parent: vault
  name: 'OAUTH-CLIENT-SECRET'
  properties: {
    value: oauthClientSecret
  }
}

output name string = vault.name
// Versionless URIs: a new secret version is picked up without redeploying.
output credentialsKeyUri string = credentialsKeySecret.properties.secretUri
output credentialsKeysPreviousUri string = !empty(credentialsKeysPrevious) ? '${vault.properties.vaultUri}secrets/CREDENTIALS-KEYS-PREVIOUS' : ''
output oauthClientSecretUri string = !empty(oauthClientSecret) ? '${vault.properties.vaultUri}secrets/OAUTH-CLIENT-SECRET' : ''
