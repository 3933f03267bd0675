"""Deployment as code: every setting the code reads is set in Azure (infra/) and locally
(local.settings.sample.json), and the Bicep templates hang together.

`az bicep build` cannot run here (the Bicep CLI is downloaded by az on first use, and this
machine has no network beyond the package registries), so the templates are checked
structurally by devtools.bicepcheck; the last tests prove that check catches real mistakes."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from devtools.bicepcheck import app_settings, check, params
from tests.support import ROOT

INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
API = INFRA / "app" / "api.bicep"
SAMPLE = ROOT / "local.settings.sample.json"

# Read by libraries or set by the platform itself, never by us.
NOT_OURS = {
    "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",  # TLS trust, the standard variables (design.md §4)
    "WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME", "WEBSITE_HOSTNAME",  # set by App Service in Azure
}
# The host's identity-based storage: Azure sets these (the template), locally AzureWebJobsStorage
# (a connection string) stands for them.
HOST_IDENTITY_FORMS = {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__queueServiceUri"}
# A sample setting that Azure provides in another form.
AZURE_FORM = {
    "AzureWebJobsStorage": "AzureWebJobsStorage__accountName",  # identity-based host storage
    "FUNCTIONS_WORKER_RUNTIME": None,  # Flex Consumption: functionAppConfig.runtime, not an app setting
}
# Settings of features built in parallel (OAuth, security, queued runs, webhooks, reconcile): listed
# in both places now, whether or not the code on this branch reads them yet.
PLANNED = {
    "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_REDIRECT_URI", "OAUTH_RETURN_URL", "PUBLIC_BASE_URL",
    "BC_ALLOWED_HOSTS", "ALLOW_PRIVATE_WEBHOOKS", "CREDENTIALS_KEYS_PREVIOUS", "MAX_INTEGRATIONS_PER_USER",
    "MANUAL_SYNCS_PER_HOUR", "TABLES_ACCOUNT_URL", "QUEUES_ACCOUNT_URL", "SYNC_QUEUE_NAME", "SYNC_SLICE_SECONDS",
    "RECONCILE_INTERVAL_HOURS",
}
_READS = [
    re.compile(r"""(?:\benv|\benviron)\s*(?:\.get\(|\[)\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""getenv\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""\(\s*env\s*,\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),  # helpers: _int(env, "NAME", ...)
]


def code_files() -> list[Path]:
    """What gets deployed: shared/ and each function folder's entry point."""
    files = sorted((ROOT / "shared").rglob("*.py"))
    files += sorted(p.parent / "__init__.py" for p in ROOT.glob("*/function.json"))
    return files


def settings_read() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in code_files():
        text = path.read_text()
        for pattern in _READS:
            for name in pattern.findall(text):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def sample() -> dict[str, str]:
    return json.loads(SAMPLE.read_text())["Values"]


def test_the_scan_finds_the_settings_we_know_are_read() -> None:
    found = settings_read()
    for name in ("CREDENTIALS_KEY", "TABLES_CONNECTION_STRING", "AzureWebJobsStorage", "BC_PAGE_SIZE",
                 "APPLICATIONINSIGHTS_CONNECTION_STRING"):
        assert name in found, name


def test_every_setting_the_code_reads_is_set_in_azure_and_in_the_sample() -> None:
    azure, local = set(app_settings(API)), set(sample())
    for name, where in sorted(settings_read().items()):
        if name in NOT_OURS:
            continue
        if name in HOST_IDENTITY_FORMS:
            assert "AzureWebJobsStorage" in local and "AzureWebJobsStorage__accountName" in azure, name
            continue
        assert name in local, f"{name} (read in {where}) is missing from local.settings.sample.json"
        assert AZURE_FORM.get(name, name) in azure, f"{name} (read in {where}) is not set by infra/app/api.bicep"


def test_every_sample_setting_is_set_in_azure() -> None:
    azure = set(app_settings(API))
    for name in sample():
        if AZURE_FORM.get(name, name) is None:
            continue
        assert AZURE_FORM.get(name, name) in azure, f"{name} is in the sample file but not in infra/app/api.bicep"


def test_the_settings_of_the_parallel_features_are_in_both_places() -> None:
    assert PLANNED <= set(sample()) and PLANNED <= set(app_settings(API))


def test_azure_uses_identities_and_key_vault_not_keys() -> None:
    azure = app_settings(API)
    assert azure["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert azure["AzureWebJobsStorage__clientId"] == azure["AZURE_CLIENT_ID"] == "identityClientId"
    assert "primaryEndpoints.table" in azure["TABLES_ACCOUNT_URL"] and "primaryEndpoints.queue" in azure["QUEUES_ACCOUNT_URL"]
    assert azure["TABLES_CONNECTION_STRING"] == "''"
    for secret in ("CREDENTIALS_KEY", "OAUTH_CLIENT_SECRET", "CREDENTIALS_KEYS_PREVIOUS"):
        assert "@Microsoft.KeyVault(SecretUri=" in azure[secret], secret
    assert azure["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "'ClientId=${identityClientId};Authorization=AAD'"
    assert azure["ALLOW_PRIVATE_WEBHOOKS"] == "'false'"
    everything = "\n".join(p.read_text() for p in INFRA.rglob("*.bicep"))
    for forbidden in ("listKeys", "AccountKey", "InstrumentationKey="):
        assert forbidden not in everything, forbidden


def test_tunables_in_azure_match_the_sample() -> None:
    """A literal in the template equals the sample file's value, except where Azure must differ."""
    differs = {"ALLOW_PRIVATE_WEBHOOKS"}  # dev-only relaxation
    local = sample()
    for name, value in app_settings(API).items():
        literal = re.fullmatch(r"'([^'$]*)'", value)
        if literal and name in local and name not in differs:
            assert literal.group(1) == local[name], name


def test_the_template_has_the_resources_the_service_needs() -> None:
    api, rbac = API.read_text(), (INFRA / "app" / "rbac.bicep").read_text()
    storage, monitoring = (INFRA / "app" / "storage.bicep").read_text(), (INFRA / "app" / "monitoring.bicep").read_text()
    vault = (INFRA / "app" / "keyvault.bicep").read_text()
    assert "name: 'FC1'" in api and "tier: 'FlexConsumption'" in api
    assert re.search(r"runtime: \{\s*name: 'python'\s*version: '3.11'", api)
    assert "type: 'UserAssigned'" in api and "keyVaultReferenceIdentity: identityId" in api
    assert "allowSharedKeyAccess: false" in storage and "allowBlobPublicAccess: false" in storage
    assert "DisableLocalAuth: true" in monitoring
    assert "enableRbacAuthorization: true" in vault
    assert "name: 'CREDENTIALS-KEY'" in vault and "name: 'OAUTH-CLIENT-SECRET'" in vault
    roles = {
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
        "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
        "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    }
    for guid, role in roles.items():
        assert guid in rbac, role
    assert "name: 'authsettingsV2'" in api and "azureActiveDirectory" in api
    assert "requireAuthentication: true" in api and "clientSecretSettingName: 'OAUTH_CLIENT_SECRET'" in api
    assert "'/api/oauth/callback'" in MAIN.read_text()  # the browser returns from Entra ID without a session


def test_azure_yaml_deploys_this_folder_as_a_python_function_app() -> None:
    text = (ROOT / "azure.yaml").read_text()
    assert re.search(r"services:\n  api:\n    project: \.\n    language: python\n    host: function\n", text)


def test_the_bicep_templates_are_consistent() -> None:
    assert check(MAIN) == []


def test_azd_passes_every_required_main_param() -> None:
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = params(MAIN)
    assert set(given) <= set(declared), set(given) - set(declared)
    assert {p for p, has_default in declared.items() if not has_default} <= set(given)


def test_the_deployed_package_has_the_page_but_no_dev_code() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text().splitlines() if line.strip()}
    assert "portal" not in ignored and "portal_http" not in ignored
    assert {"tests", "devtools", "infra", "azure.yaml"} <= ignored


@pytest.mark.parametrize(
    ("file", "old", "new", "finding"),
    [
        ("main.bicep", "    location: location\n", "    location: locaton\n", "'locaton' is used but not declared"),
        ("main.bicep", "deploymentContainerName: deploymentContainerName", "deploymentContainer: deploymentContainerName",
         "passes 'deploymentContainer'"),
        ("main.bicep", "storageAccountName: storage.outputs.name", "storageAccountName: storage.outputs.nme",
         "'storage.outputs.nme' is not an output"),
        ("app/identity.bicep", "param tags object = {}\n", "param tags object = {}\nparam unused string\n",
         "param 'unused' is declared but never used"),
        ("app/storage.bicep", "  sku: {\n", "  sku: (\n", "unexpected"),
        ("app/api.bicep", "TABLES_ACCOUNT_URL: storage.properties", "TABLES_ACCOUNT_URL: storag.properties",
         "'storag' is used but not declared"),
        ("app/api.bicep", "'${publicBaseUrl}/api/portal'", "'${publicBaseUr}/api/portal'", "'publicBaseUr' is used"),
    ],
)
def test_the_structural_check_catches_mistakes(tmp_path: Path, file: str, old: str, new: str, finding: str) -> None:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    target = copy / file
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    findings = check(copy / "main.bicep")
    assert any(finding in f for f in findings), findings
