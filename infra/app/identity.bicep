// The function app's user-assigned identity: storage, queues, tables, Key Vault and Application
// Insights all trust it through role assignments (app/rbac.bicep); no key or connection string.
param name string
param location string = resourceGroup().location
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
