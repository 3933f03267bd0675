// The function app on Flex Consumption (Python 3.11) with every app setting of
// local.settings.sample.json, identity-based storage, Key Vault references for secrets and
// App Service Authentication (Microsoft provider) in front of it.
param name string
param planName string
param location string = resourceGroup().location
param tags object = {}
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string
param credentialsKeyUri string
param credentialsKeysPreviousUri string = ''
param oauthClientSecretUri string = ''
param oauthClientId string
param bcAllowedHosts string = ''
param authExcludedPaths array = []
param bcApiBaseUrl string = 'https://api.businesscentral.dynamics.com'
param authorityHost string = 'https://login.microsoftonline.com'
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 100

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references resolve with this identity (a user-assigned one must be named).
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

var publicBaseUrl = 'https://${site.properties.defaultHostName}'

// Every setting the code reads (tests/test_deployment.py checks this list against shared/ and
// local.settings.sample.json). Tunables carry the sample file's values.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    // Functions host storage through the managed identity: no connection string, no shared key.
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    // DefaultAzureCredential (data tables, queue) picks the user-assigned identity by this id.
    AZURE_CLIENT_ID: identityClientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    TABLES_CONNECTION_STRING: ''
    TABLES_ACCOUNT_URL: storage.properties.primaryEndpoints.table
    QUEUES_ACCOUNT_URL: storage.properties.primaryEndpoints.queue
    TABLE_PREFIX: ''
    BC_API_BASE_URL: bcApiBaseUrl
    AZURE_AUTHORITY_HOST: authorityHost
    CREDENTIALS_KEY: '@Microsoft.KeyVault(SecretUri=${credentialsKeyUri})'
    CREDENTIALS_KEYS_PREVIOUS: !empty(credentialsKeysPreviousUri) ? '@Microsoft.KeyVault(SecretUri=${credentialsKeysPreviousUri})' : ''
    BC_PAGE_SIZE: '1000'
    BC_MAX_RETRIES: '5'
    BC_MAX_RETRY_SECONDS: '120'
    BC_TIMEOUT_SECONDS: '60'
    SYNC_LOOKBACK_MINUTES: '10'
    SYNC_LEASE_SECONDS: '300'
    SYNC_HTTP_BUDGET_SECONDS: '200'
    SYNC_LOG_RETENTION_DAYS: '30'
    STORAGE_WRITE_CONCURRENCY: '8'
    SYNC_QUEUE_NAME: 'sync-runs'
    SYNC_SLICE_SECONDS: '240'
    SYNC_PARALLEL_TYPES: '3'
    SYNC_MAX_DEQUEUE_COUNT: '5'
    BC_MAX_IN_FLIGHT: '5'
    BC_REQUESTS_PER_5_MINUTES: '6000'
    RECONCILE_INTERVAL_HOURS: '24'
    BC_ALLOWED_HOSTS: bcAllowedHosts
    ALLOW_PRIVATE_WEBHOOKS: 'false'
    PUBLIC_BASE_URL: publicBaseUrl
    OAUTH_CLIENT_ID: oauthClientId
    OAUTH_CLIENT_SECRET: !empty(oauthClientSecretUri) ? '@Microsoft.KeyVault(SecretUri=${oauthClientSecretUri})' : ''
    OAUTH_REDIRECT_URI: '${publicBaseUrl}/api/oauth/callback'
    OAUTH_RETURN_URL: '${publicBaseUrl}/api/portal'
    MAX_INTEGRATIONS_PER_USER: '50'
    MANUAL_SYNCS_PER_HOUR: '60'
    DISCOVERIES_PER_HOUR: '30'
    REQUIRE_CLIENT_PRINCIPAL: 'false'
    CHANGE_FEED_RETENTION_DAYS: '7'
  }
}

// App Service Authentication: callers sign in with Microsoft Entra ID; the platform then sets
// X-MS-CLIENT-PRINCIPAL-ID (and drops any such header a client sends), which is the caller identity.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
      runtimeVersion: '~1'
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: authExcludedPaths
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: 'https://sts.windows.net/${tenant().tenantId}/v2.0'
          clientId: oauthClientId
          clientSecretSettingName: 'OAUTH_CLIENT_SECRET'
        }
        validation: {
          allowedAudiences: [
            oauthClientId
            'api://${oauthClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: true
      }
    }
    httpSettings: {
      requireHttps: true
    }
  }
  dependsOn: [
    appSettings
  ]
}

output name string = site.name
output hostName string = site.properties.defaultHostName
