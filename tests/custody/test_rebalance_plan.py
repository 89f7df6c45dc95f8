from custody.hot.rebalance import effective_band, plan
from policies.model import AssetRule


def test_inside_the_band_nothing_happens():
    assert plan(50, 50, 200) is None and plan(200, 50, 200) is None


def test_above_the_band_sweeps_to_the_middle():
    assert plan(201, 50, 200) == ("sweep", 201 - 125)


def test_below_the_band_tops_up_to_the_middle():
    assert plan(49, 50, 200) == ("top_up", 125 - 49)


def test_one_sided_bands():
    assert plan(10**6, None, 200) == ("sweep", 10**6 - 100)
    assert plan(0, 50, None) == ("top_up", 50)
    assert plan(10**6, 50, None) is None


def test_bands_as_shares_of_the_total_need_the_total():
    rule = AssetRule("ETH", True, 18, 10**30, 10**20, hot_min_share=500, hot_max_share=1000)  # 5 % to 10 %
    assert effective_band(rule, 1_000_000) == (50_000, 100_000)
    assert effective_band(rule, None) == (None, None)  # no cold reading yet: no share-based action
    mixed = AssetRule("ETH", True, 18, 10**30, 10**20, hot_min=7, hot_max_share=1000)
    assert effective_band(mixed, 1000) == (7, 100)
