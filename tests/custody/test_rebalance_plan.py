from custody.rebalance import plan


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
