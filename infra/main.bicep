// BC Sync Functions on Azure Functions Flex Consumption (Python 3.11), laid out like Microsoft's
// Azure-Samples/functions-quickstart-python-http-azd: one main.bicep, small modules, a user-assigned
// identity, role assignments in their own module, every app setting named in app/api.bicep.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it seeds a short unique token used in every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource (one that offers Flex Consumption).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person running azd, given data roles on storage for debugging. Empty: none.')
param principalId string = ''

@secure()
@description('CREDENTIALS_KEY: 32 random bytes in base64 (encrypts secrets and tokens at rest). Stored in Key Vault.')
param credentialsKey string

@secure()
@description('CREDENTIALS_KEYS_PREVIOUS: comma-separated older keys that still decrypt during a rotation. Empty: none.')
param credentialsKeysPrevious string = ''

@description('Application (client) id of the platform app registration: App Service Authentication and delegated sign-in to BC.')
param oauthClientId string

@secure()
@description('Client secret of that app registration. Stored in Key Vault.')
param oauthClientSecret string

@description('BC_ALLOWED_HOSTS: origins an integration baseUrl may use (comma-separated). Empty: the BC API host only.')
param bcAllowedHosts string = ''

@description('Paths App Service Authentication lets through without sign-in (BC webhook notifications; the OAuth callback unless oauthCallbackBehindAuth).')
param authExcludedPaths array = [
  '/api/bc/notifications'
]

@description('True: App Service Authentication covers /api/oauth/callback too, so the callback sees the identity of the person who started the sign-in (docs/deploy.md). False: the callback is anonymous and the binding cookie alone ties it to its browser.')
param oauthCallbackBehindAuth bool = false

@description('Client (application) ids allowed to call the API through App Service Authentication, besides the app itself. Empty: any application of the tenant.')
param authAllowedApplications array = []

@description('Object ids of the users or service principals allowed to call the API. Empty: any principal of the tenant.')
param authAllowedPrincipals array = []

@description('True: storage and Key Vault refuse public network traffic; the app reaches them through private endpoints in a virtual network (app/network.bicep). Deploying the package then needs network access to the storage account (docs/deploy.md).')
param privateNetworking bool = false

param resourceGroupName string = ''
param functionAppName string = ''

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var appName = !empty(functionAppName) ? functionAppName : '${abbrs.webSitesFunctions}bcsync-${resourceToken}'
// The browser returns from Entra ID to the callback; it passes sign-in only when covered on purpose.
var excludedPaths = oauthCallbackBehindAuth ? authExcludedPaths : concat(authExcludedPaths, [
  '/api/oauth/callback'
])
var deploymentContainerName = 'app-package-${take(appName, 32)}-${take(resourceToken, 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity './app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}bcsync-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    privateNetworking: privateNetworking
  }
}

module monitoring './app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module vault './app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    credentialsKey: credentialsKey
    credentialsKeysPrevious: credentialsKeysPrevious
    oauthClientSecret: oauthClientSecret
    privateNetworking: privateNetworking
  }
}

module network './app/network.bicep' = if (privateNetworking) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}bcsync-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    keyVaultName: vault.outputs.name
  }
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: vault.outputs.name
    managedIdentityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
  }
}

module api './app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: appName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    credentialsKeyUri: vault.outputs.credentialsKeyUri
    credentialsKeysPreviousUri: vault.outputs.credentialsKeysPreviousUri
    oauthClientSecretUri: vault.outputs.oauthClientSecretUri
    oauthClientId: oauthClientId
    bcAllowedHosts: bcAllowedHosts
    authExcludedPaths: excludedPaths
    authAllowedApplications: authAllowedApplications
    authAllowedPrincipals: authAllowedPrincipals
    appSubnetId: privateNetworking ? network.outputs.appSubnetId : ''
  }
  // The identity must hold its roles before the host starts reaching storage and Key Vault.
  dependsOn: [
    rbac
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_FUNCTION_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output AZURE_KEY_VAULT_NAME string = vault.outputs.name
output PORTAL_URL string = 'https://${api.outputs.hostName}/api/portal'
output OAUTH_REDIRECT_URI string = 'https://${api.outputs.hostName}/api/oauth/callback'
output AUTH_REDIRECT_URI string = 'https://${api.outputs.hostName}/.auth/login/aad/callback'
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
