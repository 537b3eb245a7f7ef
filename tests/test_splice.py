"""The pure splicing of ECG slots, prompt and report ids."""

import pytest
import torch

from meit.fusion.splice import IGNORE_INDEX, prepend_ecg_slots, splice

PAD, EOS, ECG = 0, 1, 2
PROMPTS = [[10, 11, 12], [20]]
REPORTS = [[30, 31], [40, 41, 42, 43]]


def test_right_padding_labels_and_masks():
    b = splice(PROMPTS, REPORTS, pad_token_id=PAD, eos_token_id=EOS)
    assert b.input_ids.tolist() == [[10, 11, 12, 30, 31, EOS], [20, 40, 41, 42, 43, EOS]]
    assert b.labels.tolist() == [[-100, -100, -100, 30, 31, EOS], [-100, 40, 41, 42, 43, EOS]]
    assert b.attention_mask.tolist() == [[1] * 6, [1] * 6]
    assert not b.ecg_mask.any()


def test_padding_sides_hold_the_same_tokens():
    right = splice([[10], [20, 21, 22]], [[30], [40]], pad_token_id=PAD, eos_token_id=EOS)
    left = splice([[10], [20, 21, 22]], [[30], [40]], pad_token_id=PAD, eos_token_id=EOS, padding_side="left")
    assert right.input_ids.tolist() == [[10, 30, EOS, PAD, PAD], [20, 21, 22, 40, EOS]]
    assert left.input_ids.tolist() == [[PAD, PAD, 10, 30, EOS], [20, 21, 22, 40, EOS]]
    assert right.labels.tolist()[0] == [-100, 30, EOS, -100, -100]
    assert left.labels.tolist()[0] == [-100, -100, -100, 30, EOS]
    assert left.attention_mask.tolist()[0] == [0, 0, 1, 1, 1]
    for r, lft in zip(right.input_ids, left.input_ids):
        assert r[r != PAD].tolist() == lft[lft != PAD].tolist()


def test_ecg_slots_are_masked_out_of_the_labels():
    b = splice(
        [[10], [20, 21]],
        [[30], [40]],
        pad_token_id=PAD,
        eos_token_id=EOS,
        n_ecg_tokens=2,
        ecg_token_id=ECG,
        padding_side="left",
    )
    assert b.input_ids.tolist() == [[PAD, ECG, ECG, 10, 30, EOS], [ECG, ECG, 20, 21, 40, EOS]]
    assert b.ecg_mask.tolist() == [[False, True, True, False, False, False], [True, True] + [False] * 4]
    assert b.labels.tolist() == [[-100] * 4 + [30, EOS], [-100] * 4 + [40, EOS]]
    assert b.attention_mask.tolist() == [[0, 1, 1, 1, 1, 1], [1] * 6]


def test_truncation_drops_report_tail_and_eos_only_when_room():
    b = splice([[10, 11]], [[30, 31, 32, 33]], pad_token_id=PAD, eos_token_id=EOS, max_length=5)
    assert b.input_ids.tolist() == [[10, 11, 30, 31, 32]]
    assert b.labels.tolist() == [[-100, -100, 30, 31, 32]]
    exact = splice([[10, 11]], [[30, 31]], pad_token_id=PAD, eos_token_id=EOS, max_length=5)
    assert exact.input_ids.tolist() == [[10, 11, 30, 31, EOS]]
    no_eos = splice([[10, 11]], [[30, 31, 32]], pad_token_id=PAD, eos_token_id=EOS, max_length=5)
    assert no_eos.input_ids.tolist() == [[10, 11, 30, 31, 32]]


def test_truncation_of_a_long_prompt_keeps_its_end_and_the_ecg_slots():
    b = splice([[10, 11, 12, 13]], [[30]], pad_token_id=PAD, eos_token_id=EOS, max_length=4, n_ecg_tokens=1)
    assert b.input_ids.tolist() == [[PAD, 11, 12, 13]]
    assert (b.labels == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="leaves no room"):
        splice([[10]], [[30]], pad_token_id=PAD, eos_token_id=EOS, max_length=2, n_ecg_tokens=2)


def test_prompt_only_batch_for_generation():
    b = splice(PROMPTS, None, pad_token_id=PAD, eos_token_id=EOS, padding_side="left")
    assert b.input_ids.tolist() == [[10, 11, 12], [PAD, PAD, 20]]
    assert (b.labels == IGNORE_INDEX).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown padding_side"):
        splice(PROMPTS, REPORTS, pad_token_id=PAD, eos_token_id=EOS, padding_side="middle")
    with pytest.raises(ValueError, match="2 prompts but 1 reports"):
        splice(PROMPTS, REPORTS[:1], pad_token_id=PAD, eos_token_id=EOS)


def test_prepend_ecg_slots():
    ids = torch.tensor([[PAD, 10, 11]])
    mask = torch.tensor([[0, 1, 1]])
    labels = torch.tensor([[-100, -100, 11]])
    new_ids, new_mask, new_labels, ecg_mask = prepend_ecg_slots(ids, mask, labels, 2, ECG)
    assert new_ids.tolist() == [[ECG, ECG, PAD, 10, 11]]
    assert new_mask.tolist() == [[1, 1, 0, 1, 1]]
    assert new_labels.tolist() == [[-100, -100, -100, -100, 11]]
    assert ecg_mask.tolist() == [[True, True, False, False, False]]
