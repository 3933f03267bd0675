from tests.fake_async import entra_login as main
