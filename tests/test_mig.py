"""The MIG placement engine against NVIDIA's tables (docs/reference.md)."""

import pytest

from gpuparley.envs import mig
from gpuparley.envs.mig import possible_placements

# profile: (memory slices, compute slices, max per GPU, allowed starts)
A100_40GB = {
    "1g.5gb": (1, 1, 7, [0, 1, 2, 3, 4, 5, 6]),
    "1g.10gb": (2, 1, 4, [0, 2, 4, 6]),
    "2g.10gb": (2, 2, 3, [0, 2, 4]),
    "3g.20gb": (4, 3, 2, [0, 4]),
    "4g.20gb": (4, 4, 1, [0]),
    "7g.40gb": (8, 7, 1, [0]),
}
H100_80GB = {
    "1g.10gb": (1, 1, 7, [0, 1, 2, 3, 4, 5, 6]),
    "1g.20gb": (2, 1, 4, [0, 2, 4, 6]),
    "2g.20gb": (2, 2, 3, [0, 2, 4]),
    "3g.40gb": (4, 3, 2, [0, 4]),
    "4g.40gb": (4, 4, 1, [0]),
    "7g.80gb": (8, 7, 1, [0]),
}
TABLES = [("A100-40GB", A100_40GB), ("H100-80GB", H100_80GB), ("A100-80GB", H100_80GB)]


@pytest.mark.parametrize(("model", "table"), TABLES)
def test_profiles_match_the_nvidia_table(model, table):
    profiles = mig.profiles_of(model)
    assert set(profiles) == set(table)
    for name, (memory, compute, max_count, starts) in table.items():
        p = profiles[name]
        assert (p.memory_slices, p.compute_slices) == (memory, compute)
        assert possible_placements(model, name, []) == starts
        assert len(mig.uniform_layout(model, name)) == max_count


@pytest.mark.parametrize(
    ("model", "profile", "occupied", "expected"),
    [
        ("A100-40GB", "3g.20gb", [("4g.20gb", 0)], [4]),
        ("A100-40GB", "2g.10gb", [("4g.20gb", 0)], [4]),
        ("A100-40GB", "1g.5gb", [("4g.20gb", 0), ("2g.10gb", 4)], [6]),
        ("A100-40GB", "1g.5gb", [("3g.20gb", 0), ("3g.20gb", 4)], []),  # memory full
        ("A100-40GB", "1g.5gb", [("7g.40gb", 0)], []),
        ("A100-40GB", "1g.10gb", [("1g.5gb", 1)], [2, 4, 6]),
        ("A100-40GB", "3g.20gb", [("1g.5gb", 3)], [4]),
        ("A100-40GB", "4g.20gb", [("1g.5gb", 6)], [0]),
        ("A100-40GB", "1g.5gb", [("1g.10gb", s) for s in (0, 2, 4, 6)], []),
        # compute limit: 2g+2g+2g = 6 slices uses memory 0-5; 1g.5gb fits at 6 (7 compute)
        ("A100-40GB", "1g.5gb", [("2g.10gb", 0), ("2g.10gb", 2), ("2g.10gb", 4)], [6]),
        ("A100-40GB", "2g.10gb", [("2g.10gb", 0), ("2g.10gb", 2), ("2g.10gb", 4)], []),
        ("H100-80GB", "1g.20gb", [("1g.10gb", 2)], [0, 4, 6]),
        ("H100-80GB", "3g.40gb", [("2g.20gb", 0), ("1g.10gb", 2)], [4]),
        ("H100-80GB", "4g.40gb", [("3g.40gb", 4)], [0]),
        # seven 1g instances use all 7 compute slices; memory slice 7 stays free but unusable
        ("H100-80GB", "1g.10gb", [("1g.10gb", s) for s in range(7)], []),
    ],
)
def test_placements_beside_occupied_instances(model, profile, occupied, expected):
    assert possible_placements(model, profile, occupied) == expected


def test_unknown_model_or_profile_names_the_choices():
    with pytest.raises(ValueError, match="valid models: A100-40GB"):
        possible_placements("B200", "1g.10gb", [])
    with pytest.raises(ValueError, match="not MIG-capable; MIG-capable models"):
        possible_placements("T4", "1g.10gb", [])
    with pytest.raises(ValueError, match=r"valid profiles: 1g\.5gb, 1g\.10gb"):
        possible_placements("A100-40GB", "1g.20gb", [])


def test_an_illegal_occupied_layout_is_rejected():
    with pytest.raises(ValueError, match="allowed starts"):
        possible_placements("A100-40GB", "1g.5gb", [("3g.20gb", 2)])
    with pytest.raises(ValueError, match="overlaps"):
        possible_placements("A100-40GB", "1g.5gb", [("3g.20gb", 0), ("1g.5gb", 1)])


@pytest.mark.parametrize(
    ("model", "milli", "expected"),
    [
        ("A100-80GB", 50, "1g.10gb"),
        ("A100-80GB", 110, "1g.10gb"),
        ("A100-80GB", 230, "2g.20gb"),
        ("A100-80GB", 320, "3g.40gb"),
        ("A100-80GB", 460, "4g.40gb"),
        ("A100-80GB", 810, "7g.80gb"),
        ("A100-40GB", 120, "1g.5gb"),
        ("A100-40GB", 140, "1g.10gb"),  # 5.6 GiB of memory needs the 10 GB slice
        ("A100-40GB", 150, "2g.10gb"),  # 2/7 compute needed (1/7 = 143 milli)
        ("H100-80GB", 1000, "7g.80gb"),
    ],
)
def test_share_to_profile_covers_compute_and_memory(model, milli, expected):
    name = mig.profile_for_share(model, milli)
    assert name == expected
    chosen = mig.lookup_profile(model, name)
    assert chosen.compute_slices / 7 >= milli / 1000


def test_share_to_profile_respects_an_explicit_memory_need():
    assert mig.profile_for_share("A100-80GB", 100, gpu_memory_gib=30) == "3g.40gb"
