from tests.fake_async import list_delegated as main
