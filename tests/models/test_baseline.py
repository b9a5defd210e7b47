"""The fusion baseline on generated features: shapes, masking, determinism, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.baseline import Bundle, ExpertInput, FusionClassifier
from models.metrics import evaluate
from models.nets import AttentionFusion, NetConfig

LABELS = ("a", "b", "c")


def make_bundle(n=90, seed=0, missing=0.2):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    signal = np.eye(3)[y] * 2.0
    good = np.concatenate([signal, rng.normal(0, 0.5, (n, 5))], 1).astype(np.float32) + rng.normal(
        0, 0.5, (n, 8)
    )
    noise = rng.normal(0, 1, (n, 4)).astype(np.float32)
    seqs = [rng.normal(y[i], 1.0, (int(rng.integers(3, 9)), 6)).astype(np.float32) for i in range(n)]
    text = [rng.normal(-y[i], 1.0, (int(rng.integers(2, 6)), 5)).astype(np.float32) for i in range(n)]
    present = lambda: rng.random(n) > missing  # noqa: E731
    experts = [
        ExpertInput("good", "vector", present(), x=good.astype(np.float32)),
        ExpertInput("noise", "vector", present(), x=noise),
        ExpertInput("seq", "sequence", present(), seqs=seqs),
        ExpertInput("joint", "joint", present(), seqs=seqs, seqs2=text),
    ]
    return Bundle([f"c{i}" for i in range(n)], experts), y


@pytest.fixture(scope="module")
def fitted():
    bundle, y = make_bundle()
    models = {
        f: FusionClassifier(LABELS, fusion=f, epochs=15, seed=1).fit(bundle, y) for f in ("moe", "attention")
    }
    return bundle, y, models


def test_probabilities_have_the_right_shape_and_sum_to_one(fitted):
    bundle, _, models = fitted
    moe = models["moe"].predict_proba(bundle)
    assert set(moe) == {"final", "fused", "expert:good", "expert:noise", "expert:seq", "expert:joint"}
    for key, p in moe.items():
        rows = p[~np.isnan(p).any(1)]
        assert p.shape == (len(bundle), 3) and np.allclose(rows.sum(1), 1, atol=1e-5), key
    absent = ~bundle.experts[0].present
    assert np.isnan(moe["expert:good"][absent]).all() and not np.isnan(moe["expert:good"][~absent]).any()
    att = models["attention"].predict_proba(bundle)
    assert set(att) == {"final"} and np.allclose(att["final"].sum(1), 1, atol=1e-5)


def test_fit_learns_the_informative_expert(fitted):
    bundle, y, models = fitted
    for model in models.values():
        pred = model.predict_proba(bundle)["final"].argmax(1)
        assert (pred == y).mean() > 0.8


def test_absent_inputs_are_never_read(fitted):
    bundle, _, models = fitted
    changed = Bundle(bundle.clip_ids, [e.subset(np.arange(len(bundle))) for e in bundle.experts])
    e = changed.experts[0]
    e.x = e.x.copy()
    e.x[~e.present] = 1e6  # garbage where the expert is absent
    for model in models.values():
        np.testing.assert_allclose(
            model.predict_proba(changed)["final"], model.predict_proba(bundle)["final"], atol=1e-6
        )


def test_a_clip_with_no_expert_still_gets_probabilities(fitted):
    bundle, _, models = fitted
    one = bundle.subset([0])
    for e in one.experts:
        e.present = np.zeros(1, bool)
    for model in models.values():
        p = model.predict_proba(one)["final"]
        assert np.isfinite(p).all() and np.allclose(p.sum(), 1, atol=1e-5)


def test_predict_proba_changes_nothing(fitted):
    bundle, _, models = fitted
    model = models["moe"]
    before = {k: v.clone() for k, v in model.net_.state_dict().items()}
    model.predict_proba(bundle)
    after = model.net_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_rows_over_several_batches_land_in_their_places(fitted):
    # 600 rows, in a shuffled order with repeats: three prediction batches of 256 and a rest.
    bundle, _, models = fitted
    rows = np.random.default_rng(3).permutation(np.tile(np.arange(len(bundle)), 7))[:600]
    for model in models.values():
        whole, picked = model.predict_proba(bundle), model.predict_proba(bundle, rows)
        assert list(picked) == list(whole)
        for head, p in picked.items():
            assert p.dtype == np.float32 and p.shape == (600, 3)
            np.testing.assert_allclose(p, whole[head][rows], atol=1e-6, err_msg=head)


def test_same_seed_same_model_other_seed_other_model():
    bundle, y = make_bundle(n=45)
    a = FusionClassifier(LABELS, epochs=3, seed=7).fit(bundle, y).predict_proba(bundle)["final"]
    b = FusionClassifier(LABELS, epochs=3, seed=7).fit(bundle, y).predict_proba(bundle)["final"]
    c = FusionClassifier(LABELS, epochs=3, seed=8).fit(bundle, y).predict_proba(bundle)["final"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_early_stopping_keeps_the_best_validation_epoch():
    bundle, y = make_bundle(n=90)
    tr, va = np.arange(60), np.arange(60, 90)
    model = FusionClassifier(LABELS, epochs=40, patience=3, seed=0).fit(
        bundle.subset(tr), y[tr], val=(bundle.subset(va), y[va])
    )
    scores = [h["val_weighted_f1"] for h in model.history_]
    assert model.val_f1_ == max(scores) and scores[model.best_epoch_] == max(scores)
    assert len(scores) <= model.best_epoch_ + 1 + 3


def test_rows_read_in_place_train_the_model_their_copy_trains():
    bundle, y = make_bundle(n=90)
    rng = np.random.default_rng(3)
    tr, va = rng.permutation(90)[:60], np.arange(60, 90)[::-1]
    w = rng.random(60).astype(np.float32)
    copied = FusionClassifier(LABELS, epochs=5, patience=2, seed=4).fit(
        bundle.subset(tr), y[tr], w, val=(bundle.subset(va), y[va]))
    in_place = FusionClassifier(LABELS, epochs=5, patience=2, seed=4).fit(
        bundle, y[tr], w, val=(bundle, y[va], va), rows=tr)
    assert in_place.history_ == copied.history_ and in_place.best_epoch_ == copied.best_epoch_
    for name, stats in copied.scalers_.items():
        for (m1, s1), (m2, s2) in zip(stats, in_place.scalers_[name], strict=True):
            np.testing.assert_array_equal(m1, m2)
            np.testing.assert_array_equal(s1, s2)
    a, b = copied.predict_proba(bundle), in_place.predict_proba(bundle)
    for head in a:
        np.testing.assert_array_equal(a[head], b[head])


class RowCounting(FusionClassifier):
    """Counts the rows each training step sees."""

    def _loss(self, out, y, weight, present, class_w):
        self.rows_seen_ = getattr(self, "rows_seen_", 0) + len(y)
        return super()._loss(out, y, weight, present, class_w)


def test_pseudo_ratio_trains_each_epoch_on_the_humans_and_a_fresh_draw_of_pseudo_rows():
    pseudo = np.r_[np.zeros(20, bool), np.ones(100, bool)]
    clf, rng = FusionClassifier(LABELS, pseudo_ratio=0.5), np.random.default_rng(0)
    a, b = clf._epoch_rows(rng, 120, pseudo), clf._epoch_rows(rng, 120, pseudo)
    for rows in (a, b):
        assert len(rows) == len(set(rows)) == 30 and set(range(20)) <= set(rows) and rows.max() < 120
    assert set(a[a >= 20]) != set(b[b >= 20])                       # drawn afresh
    assert sorted(FusionClassifier(LABELS)._epoch_rows(rng, 120, pseudo)) == list(range(120))
    # Fitting: 30 human + 60 pseudo rows at ratio 0.5 is 45 rows an epoch; without a ratio
    # (or without pseudo rows) every row, and the same model as before the option existed.
    bundle, y = make_bundle(n=90)
    mask = np.arange(90) >= 30
    sampled = RowCounting(LABELS, epochs=3, seed=2, pseudo_ratio=0.5).fit(bundle, y, pseudo=mask)
    assert sampled.rows_seen_ == 3 * 45
    full = RowCounting(LABELS, epochs=3, seed=2).fit(bundle, y, pseudo=mask)
    plain = RowCounting(LABELS, epochs=3, seed=2).fit(bundle, y)
    assert full.rows_seen_ == plain.rows_seen_ == 3 * 90
    np.testing.assert_array_equal(full.predict_proba(bundle)["final"], plain.predict_proba(bundle)["final"])
    assert not np.allclose(sampled.predict_proba(bundle)["final"], plain.predict_proba(bundle)["final"])


def test_round_trip_through_bytes(fitted):
    bundle, _, models = fitted
    for model in models.values():
        again = FusionClassifier.from_bytes(model.to_bytes())
        np.testing.assert_allclose(
            again.predict_proba(bundle)["final"], model.predict_proba(bundle)["final"], atol=1e-6
        )


def test_attention_weights_are_normalised_over_present_experts():
    fusion = AttentionFusion(3, 2, NetConfig(hidden=8))
    h = torch.randn(4, 3, 8)
    present = torch.tensor(
        [[True, True, True], [True, False, True], [False, False, True], [False, False, False]]
    )
    _, w = fusion.pool(h, present)
    assert torch.allclose(w[:3].sum(1), torch.ones(3))
    assert (w[~present] == 0).all() and torch.equal(w[3], torch.zeros(3))


def test_unknown_fusion_is_refused():
    bundle, y = make_bundle(n=12)
    with pytest.raises(ValueError, match="unknown fusion 'sum'"):
        FusionClassifier(LABELS, fusion="sum").fit(bundle, y)


def test_evaluate_matches_sklearn_weighted_f1():
    from sklearn.metrics import f1_score

    truth, pred = ["a", "a", "b", "c", "c", "c"], ["a", "b", "b", "c", "a", "c"]
    m = evaluate(truth, pred, LABELS)
    assert m["weighted_f1"] == pytest.approx(f1_score(truth, pred, average="weighted"))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["recall"] == {"a": 0.5, "b": 1.0, "c": pytest.approx(2 / 3)}
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_scalers_read_a_chunk_of_rows_at_a_time_give_numpys_mean_and_std_bit_for_bit():
    from models.baseline import _frames, column_stats

    rng = np.random.default_rng(4)
    x = rng.normal(40.0, 25.0, (3000, 57)).astype(np.float32)
    rows = rng.permutation(3000)[:2500]
    for chunk in (1, 7, 256, 4096):
        mean, std = column_stats(lambda c: x[c], rows, chunk=chunk)
        assert mean.dtype == std.dtype == np.float32
        np.testing.assert_array_equal(mean, x[rows].mean(0))
        np.testing.assert_array_equal(std, x[rows].std(0) + 1e-6)
    # A sequence input: the frames of the chosen clips, absent and empty ones left out.
    seqs = [None if i % 5 == 0 else rng.normal(-3.0, 2.0, (i % 9, 6)).astype(np.float32) for i in range(400)]
    frames = np.concatenate([s for s in seqs if s is not None and len(s)])
    mean, std = column_stats(lambda c: _frames(seqs, c), np.arange(400), chunk=13)
    np.testing.assert_array_equal(mean, frames.mean(0))
    np.testing.assert_array_equal(std, frames.std(0) + 1e-6)
    assert column_stats(lambda c: x[c], np.array([], int)) == (0.0, 1.0)


def test_only_the_frames_a_sequence_input_keeps_are_normalised():
    import tracemalloc

    bundle, y = make_bundle(n=12)
    model = FusionClassifier(LABELS, fusion="moe", epochs=1, seed=0, max_seq=4).fit(bundle, y)
    seqs = bundle.experts[2].seqs
    # One clip with a 400,000-frame sequence (9.6 MB): only its first max_seq frames are read.
    seqs[0] = np.random.default_rng(0).normal(0, 1, (400_000, 6)).astype(np.float32)
    bundle.experts[2].present[0] = True
    tracemalloc.start()
    try:
        inputs, _ = model._tensors(bundle, np.array([0, 1]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak
    x, pad = inputs[2]
    m, s = model.scalers_["seq"][0]
    np.testing.assert_array_equal(x[0].numpy(), ((seqs[0][:4] - m) / s).astype(np.float32))
    assert not pad[0].any()
