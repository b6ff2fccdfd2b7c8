import numpy as np

from spa.analysis.space import Space, regroup_map, reshape_groups


def test_reshape_groups_pairs_runs_of_equal_product():
    assert reshape_groups([1, 8, 4, 4], [1, 128]) == [([0], [0]), ([1, 2, 3], [1])]
    assert reshape_groups([1, 8, 6, 6], [1, 2, 4, 6, 6]) == [([0], [0]), ([1], [1, 2]), ([2], [3]), ([3], [4])]
    assert reshape_groups([1, 512, 1, 1], [1, 512]) == [([0], [0]), ([1, 2, 3], [1])]
    assert reshape_groups([512], [1, 512]) == [([0], [0, 1])]
    assert reshape_groups([6, 4], [4, 6]) == [([0, 1], [0, 1])]
    assert reshape_groups([2, 3], [7]) is None


def test_regroup_map_block_and_permutation():
    # Flatten (C=3, H=2, W=2): feature p belongs to channel p // 4.
    np.testing.assert_array_equal(regroup_map({1: 3, 2: 2, 3: 2}, (1,), [1, 2, 3]), np.arange(12) // 4)
    # A space whose significance order is (2, 1) merged in tensor order (1, 2): a transpose.
    merged = regroup_map({1: 4, 2: 2}, (2, 1), [1, 2])
    expected = [(p % 2) * 4 + p // 2 for p in range(8)]
    np.testing.assert_array_equal(merged, expected)


def test_space_coordinates_follow_significance_order():
    s = Space("v", (2, 1), (2, 3), "act")
    coords = s.coordinates()
    assert coords.shape == (6, 2)
    np.testing.assert_array_equal(coords[4], [1, 1])
    assert s.key == "v:2,1" and s.size == 6
