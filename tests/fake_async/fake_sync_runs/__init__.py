from tests.fake_async import get as main
