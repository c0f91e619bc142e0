import pytest
import torch

from comad.masking import MaskGenerator, indices_to_mask


def gen(**kw):
    return MaskGenerator(196, **kw)


def test_sizes_and_sorted_unique_rows():
    m = gen()(8, torch.Generator().manual_seed(0))
    assert m.student.shape == (8, 49)  # round(0.25 * 196)
    assert [t.shape for t in m.teachers] == [(8, 98), (8, 127), (8, 157)]  # round(.5/.65/.8 * 196)
    for idx in [m.student, *m.teachers]:
        assert (idx.diff(dim=1) > 0).all()  # sorted and no repeats
        assert idx.min() >= 0 and idx.max() < 196


def test_nested_teacher_masks_contain_student_and_are_unique():
    m = gen()(16, torch.Generator().manual_seed(1))
    s = m.student_mask()
    t = m.teacher_masks()
    assert (t & s).sum((1, 2)).tolist() == [s.sum().item()] * 3  # every teacher sees S
    # each teacher mask is its own: the extra patches differ between teachers and samples
    assert not torch.equal(t[0], t[1][:, :].logical_and(t[0]))  # teacher 1 sees patches teacher 0 does not
    extras = [(tk & ~s) for tk in t]
    assert not torch.equal(extras[1], extras[2])


def test_lighter_masks_keep_more():
    m = gen()(4, torch.Generator().manual_seed(2))
    counts = m.teacher_masks().sum(-1)[:, 0].tolist()
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_per_sample_randomness_and_seed_reproducibility():
    a = gen()(6, torch.Generator().manual_seed(3))
    b = gen()(6, torch.Generator().manual_seed(3))
    c = gen()(6, torch.Generator().manual_seed(4))
    assert torch.equal(a.student, b.student) and all(torch.equal(x, y) for x, y in zip(a.teachers, b.teachers))
    assert not torch.equal(a.student, c.student)
    assert len({tuple(r.tolist()) for r in a.student}) == 6  # rows differ


@pytest.mark.parametrize("nested", [True, False])
def test_rows_are_the_same_rows_of_the_full_draw(nested):
    """One rank's rows (rows=slice(r, None, W)) equal those rows of the whole global batch's masks."""
    full = gen(nested=nested)(12, torch.Generator().manual_seed(7))
    for rows in (slice(0, None, 4), slice(3, None, 4), slice(2, 9)):
        part = gen(nested=nested)(12, torch.Generator().manual_seed(7), rows=rows)
        assert torch.equal(part.student, full.student[rows])
        assert all(torch.equal(p, f[rows]) for p, f in zip(part.teachers, full.teachers))


def test_independent_masks_need_not_contain_student():
    m = gen(nested=False)(32, torch.Generator().manual_seed(5))
    s, t = m.student_mask(), m.teacher_masks()
    assert t.sum(-1)[:, 0].tolist() == [98, 127, 157]
    assert ((t[0] & s).sum(-1) < s.sum(-1)).any()


def test_linear_schedule_of_ratios():
    g = gen(teacher_keep=(0.5, 0.5), teacher_keep_end=(0.3, 0.9))
    assert g.teacher_ratios(0.0) == [0.5, 0.5]
    assert g.teacher_ratios(0.5) == pytest.approx([0.4, 0.7])
    assert g.teacher_ratios(1.0) == pytest.approx([0.3, 0.9])
    m = g(2, torch.Generator().manual_seed(0), progress=1.0)
    assert [t.shape[1] for t in m.teachers] == [round(0.3 * 196), round(0.9 * 196)]


def test_indices_to_mask():
    m = indices_to_mask(torch.tensor([[0, 2], [1, 3]]), 4)
    assert m.tolist() == [[True, False, True, False], [False, True, False, True]]


@pytest.mark.parametrize("kw, msg", [
    (dict(student_keep=-0.1), "student_keep must be in (0, 1], got -0.1"),
    (dict(student_keep=1.5), "student_keep must be in (0, 1], got 1.5"),
    (dict(teacher_keep=(0.5, 0.0)), "teacher_keep must be in (0, 1], got 0.0"),
    (dict(teacher_keep=(0.2,)), "nested masks need every teacher_keep ratio >= student_keep"),
    (dict(teacher_keep=(0.5, 0.6), teacher_keep_end=(0.5,)), "teacher_keep_end has 1 ratios"),
])
def test_bad_ratios_are_refused(kw, msg):
    with pytest.raises(ValueError) as e:
        gen(**kw)
    assert msg in str(e.value)
