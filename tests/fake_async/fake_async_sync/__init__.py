from tests.fake_async import post as main
