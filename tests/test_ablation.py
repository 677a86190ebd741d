"""ablation.py: held-out prompts are seen or unseen combinations as asked; bad variants are refused."""

import pytest

from tokencompose.ablation import VARIANTS, held_out_prompts, run_ablation
from tokencompose.toyworld import EXCLUDED_PAIRS


def contains_excluded_pair(objects):
    return sum(set(pair) <= set(objects) for pair in EXCLUDED_PAIRS)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_unseen_prompts_hold_exactly_one_excluded_pair(count):
    prompts = held_out_prompts(50, count, unseen=True, seed=1)
    assert all(len(p.objects) == count == len(set(p.objects)) for p in prompts)
    assert all(contains_excluded_pair(p.objects) == 1 for p in prompts)
    assert all(all(name in p.text for name in p.objects) for p in prompts)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_seen_prompts_hold_none(count):
    prompts = held_out_prompts(50, count, unseen=False, seed=1)
    assert all(contains_excluded_pair(p.objects) == 0 for p in prompts)


def test_prompts_are_deterministic_and_differ_by_seed():
    assert held_out_prompts(10, 3, True, seed=5) == held_out_prompts(10, 3, True, seed=5)
    assert held_out_prompts(10, 3, True, seed=5) != held_out_prompts(10, 3, True, seed=6)


def test_variants_are_table_two_and_unknown_ones_are_refused(tmp_path):
    assert VARIANTS == {"ldm": (False, False), "pixel": (False, True), "token": (True, False), "both": (True, True)}
    with pytest.raises(ValueError, match="unknown variant"):
        run_ablation(["ldm", "tokens"], out_dir=tmp_path)
