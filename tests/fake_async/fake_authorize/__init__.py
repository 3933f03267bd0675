from tests.fake_async import authorize as main
