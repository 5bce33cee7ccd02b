"""Claims verdicts follow synthetic data built to satisfy or violate each claim."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from metalandscape.claims import (
    EARLY_PHASE,
    TOO_FEW,
    ClaimsError,
    Thresholds,
    check_claims,
    claims_markdown,
    window_sensitivity,
    windows_markdown,
)

EPOCHS = np.arange(8)
#: One paper epoch (500 meta-iterations) per checkpoint: θ0 before the default window, 7 in it.
ITERATIONS = EPOCHS * 500
SEEDS = [0, 1, 2]


def grid(
    dataset="fontglot", variant="default", algorithms=("maml", "fomaml", "finetune"), shots=(1,)
):
    coords = {
        "dataset": [dataset],
        "variant": [variant],
        "way": [5 if dataset != "sinusoid" else 1],
        "shot": list(shots),
        "algorithm": list(algorithms),
        "seed": SEEDS,
        "epoch": EPOCHS,
    }
    shape = tuple(len(v) for v in coords.values())
    return coords, shape


def make_dataset(series: dict[str, np.ndarray], **grid_options) -> xr.Dataset:
    """Every setting and seed gets ``series[name]`` over epochs, plus small seed noise."""
    coords, shape = grid(**grid_options)
    rng = np.random.default_rng(0)
    data = {}
    for name, values in series.items():
        array = np.broadcast_to(values, shape).copy()
        array += rng.normal(0, 1e-3, size=shape) * np.abs(array).mean()
        data[name] = (tuple(coords), array)
    iteration = np.broadcast_to(ITERATIONS, shape).astype(np.float64)
    return xr.Dataset(data, coords={**coords, "iteration": (tuple(coords), iteration)})


def verdicts(table, claim, statistic_part=""):
    """The verdicts of ``claim`` where it is judged (the window; extensions' own selection)."""
    table = table[table.phase != EARLY_PHASE]
    rows = table[(table.claim == claim) & table.statistic.str.contains(statistic_part, regex=False)]
    assert not rows.empty, (claim, statistic_part)
    return set(rows.verdict)


RISING = np.linspace(0.2, 0.9, len(EPOCHS))
PEAKED = np.array([1.0, 3.0, 6.0, 8.0, 7.0, 5.0, 4.0, 3.5])
MONOTONE_UP = np.linspace(1.0, 8.0, len(EPOCHS))


def test_claims_hold_on_data_built_to_satisfy_them():
    dataset = make_dataset(
        {
            "hessian_top_eigenvalue_mean": PEAKED,
            "support_loss_mean": np.linspace(2.0, 0.1, len(EPOCHS)),
            "test_target_accuracy_mean": RISING,
            "trajectory_coherence": 0.1 + 0.3 * RISING,
            "gradient_coherence": 2.0 * RISING,
        }
    )
    # The finetune baseline's coherence is tiny compared with MAML's.
    for name in ("trajectory_coherence", "gradient_coherence"):
        dataset[name].loc[{"algorithm": "finetune"}] = 0.001
    table = check_claims([dataset], Thresholds())
    for claim in (1, 2, 4, 5, 6):
        assert verdicts(table, claim) == {"holds"}, table[table.claim == claim]
    assert set(table[table.claim == 1].algorithm) == {"maml", "fomaml"}
    assert table.data.str.contains("not the paper's data").all()


def test_claims_fail_on_data_built_to_violate_them():
    dataset = make_dataset(
        {
            "hessian_top_eigenvalue_mean": MONOTONE_UP,  # sharper all along, no peak
            "support_loss_mean": np.linspace(0.1, 2.0, len(EPOCHS)),  # rising
            "test_target_accuracy_mean": RISING,
            "trajectory_coherence": 0.4 - 0.3 * RISING,  # anti-correlated
            "gradient_coherence": 2.0 - RISING,
        }
    )
    table = check_claims([dataset], Thresholds())
    assert verdicts(table, 1, "drop") == {"does not hold"}
    assert verdicts(table, 2) == {"does not hold"}
    assert verdicts(table, 4) == {"does not hold"}
    assert verdicts(table, 5) == {"does not hold"}
    assert verdicts(table, 6) == {"does not hold"}  # finetune as coherent as MAML here


def test_overtraining_claim_uses_epochs_after_the_accuracy_peak():
    accuracy = np.array([0.3, 0.5, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45])
    flatter = np.array([5.0, 6.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0])  # falls with accuracy
    sharper = flatter[::-1].copy()
    holds = make_dataset(
        {"hessian_top_eigenvalue_mean": flatter, "test_target_accuracy_mean": accuracy},
        variant="long",
    )
    fails = make_dataset(
        {"hessian_top_eigenvalue_mean": sharper, "test_target_accuracy_mean": accuracy},
        variant="long",
    )
    assert verdicts(check_claims([holds], Thresholds()), 3) == {"holds"}
    assert verdicts(check_claims([fails], Thresholds()), 3) == {"does not hold"}
    other_variant = make_dataset(
        {"hessian_top_eigenvalue_mean": flatter, "test_target_accuracy_mean": accuracy}
    )
    assert 3 not in set(check_claims([other_variant], Thresholds()).claim)


def test_sinusoid_gradient_coherence_across_k():
    shots = (2, 5, 10)
    coords, shape = grid(dataset="sinusoid", algorithms=("maml",), shots=shots)
    coherence = np.zeros(shape)
    mse = np.zeros(shape)
    for i, k in enumerate(shots):
        coherence[:, :, :, i] = k * RISING
        mse[:, :, :, i] = 3.0 / k * (1.1 - RISING)
    dataset = xr.Dataset(
        {
            "gradient_coherence": (tuple(coords), coherence),
            "test_target_mse_mean": (tuple(coords), mse),
        },
        coords={
            **coords,
            "iteration": (tuple(coords), np.broadcast_to(ITERATIONS, shape).astype(float)),
        },
    )
    table = check_claims([dataset], Thresholds())
    across = table[table.statistic.str.contains("across k") & (table.phase != EARLY_PHASE)]
    assert len(across) == 1 and across.verdict.iloc[0] == "holds"
    assert verdicts(table, 5, "over epochs") == {"holds"}


def test_thresholds_come_from_config_and_unknown_keys_are_named():
    strict = Thresholds.from_mapping({"trajectory_coherence_correlation": 1.0})
    dataset = make_dataset({"trajectory_coherence": RISING, "test_target_accuracy_mean": RISING})
    assert verdicts(check_claims([dataset], strict), 4) == {"does not hold"}
    with pytest.raises(ClaimsError, match="bogus"):
        Thresholds.from_mapping({"bogus": 1})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("flatness_rise", "high", "claims.flatness_rise must be a finite number"),
        ("flatness_rise", math.nan, "claims.flatness_rise must be a finite number"),
        ("flatness_drop", math.inf, "claims.flatness_drop must be a finite number"),
        ("flatness_rise", True, "claims.flatness_rise must be a finite number"),
        ("flatness_rise", -0.1, "out of range"),
        ("trajectory_coherence_correlation", 1.5, "out of range; use \\[-1, 1\\]"),
        ("support_loss_decrease_fraction", 2, "out of range"),
        ("overtraining_min_epochs_after_peak", 2.5, "must be an integer"),
        ("overtraining_min_epochs_after_peak", 1, "out of range"),
        ("overtraining_variants", "long", "list of variant names"),
        ("overtraining_variants", [1], "variant names"),
    ],
)
def test_bad_thresholds_are_named(key, value, message):
    with pytest.raises(ClaimsError, match=message) as error:
        Thresholds.from_mapping({key: value})
    assert "\n" not in str(error.value)


def test_bad_threshold_is_one_line_and_exit_2(tmp_path, capsys):
    from metalandscape.cli import main

    code = main(
        [
            "claims",
            "--thresholds-json",
            '{"flatness_rise": "high"}',
            "--out-csv",
            str(tmp_path / "c.csv"),
            "--out-md",
            str(tmp_path / "c.md"),
            "--input",
            str(tmp_path / "missing.nc"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "claims.flatness_rise" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_one_seed_gives_a_value_without_interval():
    dataset = make_dataset(
        {"trajectory_coherence": RISING, "test_target_accuracy_mean": RISING}
    ).isel(seed=[0])
    table = check_claims([dataset], Thresholds())
    rows = table[(table.claim == 4) & (table.phase != EARLY_PHASE)]
    assert set(rows.seeds) == {1} and rows.ci_low.isna().all()
    assert not rows.ci_excludes_threshold.any()
    text = claims_markdown(table)
    assert "| 1 |" in text and "| — |" in text


def test_correlation_intervals_stay_inside_minus_one_one():
    dataset = make_dataset({"trajectory_coherence": RISING, "test_target_accuracy_mean": RISING})
    rows = check_claims([dataset], Thresholds())
    rows = rows[(rows.claim == 4) & (rows.phase != EARLY_PHASE)]
    assert (rows.ci_low >= -1).all() and (rows.ci_high <= 1).all() and (rows.seeds == 3).all()


def test_markdown_names_the_data_and_every_claim():
    dataset = make_dataset(
        {"hessian_top_eigenvalue_mean": PEAKED, "support_loss_mean": PEAKED[::-1].copy()}
    )
    text = claims_markdown(check_claims([dataset], Thresholds()), "config.yaml")
    assert "## Claim 1" in text and "## Claim 2" in text
    assert "fontglot (embedded Omniglot stand-in" in text


def test_function_coherence_extension_is_marked_and_compares_the_two_correlations():
    tracks = 0.1 + 0.8 * RISING  # follows accuracy
    wobbles = 0.2 + 0.05 * np.sin(3 * EPOCHS)  # does not
    series = {"test_target_accuracy_mean": RISING}
    better = make_dataset({**series, "function_coherence": tracks, "trajectory_coherence": wobbles})
    worse = make_dataset({**series, "function_coherence": wobbles, "trajectory_coherence": tracks})
    table = check_claims([better], Thresholds())
    assert verdicts(table, 7) == {"holds"}
    assert set(table[table.claim == 7].algorithm) == {"maml", "fomaml"}
    assert table[table.claim == 7].title.str.startswith("[extension, not a claim").all()
    assert verdicts(check_claims([worse], Thresholds()), 7) == {"does not hold"}
    # Equal tracking passes the default non-inferiority margin, not a positive one.
    equal = make_dataset({**series, "function_coherence": tracks, "trajectory_coherence": tracks})
    assert verdicts(check_claims([equal], Thresholds()), 7) == {"holds"}
    strict = Thresholds.from_mapping({"function_coherence_margin": 0.05})
    assert verdicts(check_claims([equal], strict), 7) == {"does not hold"}
    assert 7 not in set(check_claims([make_dataset(series)], Thresholds()).claim)


def test_theta0_alone_flips_a_correlation_and_the_window_leaves_it_out():
    """A known answer: accuracy and coherence rise together from iteration 500 on, but θ0 has
    the highest coherence and the lowest accuracy. Over all checkpoints R < 0; in the paper's
    window (from 500) R = 1; the early phase (θ0 alone) has too few checkpoints."""
    coherence = np.array([5.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    accuracy = np.array([0.1, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9])
    dataset = make_dataset(
        {"trajectory_coherence": coherence, "test_target_accuracy_mean": accuracy}
    )
    x, y = coherence, accuracy
    assert np.corrcoef(x, y)[0, 1] < 0 < np.corrcoef(x[1:], y[1:])[0, 1]
    table = check_claims([dataset], Thresholds())
    pearson = table[(table.claim == 4) & table.statistic.str.startswith("Pearson")]
    window = pearson[pearson.phase == "paper window"].iloc[0]
    assert window.verdict == "holds" and window.value > 0.99
    assert window.window == "iterations 500–3,500, 7 checkpoints" and window.checkpoints == 7
    early = pearson[pearson.phase == EARLY_PHASE].iloc[0]
    assert early.verdict == TOO_FEW and math.isnan(early.value) and early.checkpoints == 1
    everything = check_claims([dataset], Thresholds.from_mapping({"window": {"from_iteration": 0}}))
    everything = everything[
        (everything.claim == 4) & everything.statistic.str.startswith("Pearson")
    ]
    assert set(everything.phase) == {"paper window"}  # a window from 0 has no early phase
    assert set(everything.verdict) == {"does not hold"} and (everything.value < 0).all()


def test_too_few_checkpoints_in_the_window_give_no_number():
    dataset = make_dataset({"trajectory_coherence": RISING, "test_target_accuracy_mean": RISING})
    late = Thresholds.from_mapping({"window": {"from_iteration": 2500}})  # 2,500-3,500: 3
    rows = check_claims([dataset], late)
    rows = rows[(rows.claim == 4) & (rows.phase == "paper window")]
    assert set(rows.verdict) == {TOO_FEW} and rows.value.isna().all()
    assert set(rows.checkpoints) == {3}
    assert "too few checkpoints in the window" in claims_markdown(rows)
    fewer = Thresholds.from_mapping(
        {"window": {"from_iteration": 2500}, "min_window_checkpoints": 3}
    )
    rows = check_claims([dataset], fewer)
    rows = rows[(rows.claim == 4) & (rows.phase == "paper window")]
    assert set(rows.verdict) == {"holds"}


def test_window_end_and_bad_windows():
    dataset = make_dataset({"trajectory_coherence": RISING, "test_target_accuracy_mean": RISING})
    bounded = Thresholds.from_mapping({"window": {"from_iteration": 500, "to_iteration": 3000}})
    rows = check_claims([dataset], bounded)
    row = rows[(rows.claim == 4) & (rows.phase == "paper window")].iloc[0]
    assert row.window == "iterations 500–3,000, 6 checkpoints"
    for window, message in (
        ({"from_iteration": -1}, "from_iteration must be an integer >= 0"),
        ({"from_iteration": 500, "to_iteration": 400}, "to_iteration must be null or"),
        ({"start": 5}, "unknown key"),
        (500, "must be a mapping"),
    ):
        with pytest.raises(ClaimsError, match=message) as error:
            Thresholds.from_mapping({"window": window})
        assert "\n" not in str(error.value)


def test_claims_need_the_iteration_coordinate():
    dataset = make_dataset({"trajectory_coherence": RISING}).drop_vars("iteration")
    with pytest.raises(ClaimsError, match="'iteration' coordinate"):
        check_claims([dataset], Thresholds())


def test_window_sensitivity_shows_where_the_verdict_flips(tmp_path):
    coherence = np.array([5.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    accuracy = np.array([0.1, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9])
    dataset = make_dataset(
        {"trajectory_coherence": coherence, "test_target_accuracy_mean": accuracy}
    )
    table = window_sensitivity([dataset], Thresholds())
    pearson = table[(table.claim == 4) & table.statistic.str.startswith("Pearson")]
    by_start = {
        (row.algorithm, row.start): (row.value, row.checkpoints) for row in pearson.itertuples()
    }
    # Start 0 keeps θ0 (8 checkpoints: R < 0); 100 and 500 leave it out (7), 1,000 leaves 6;
    # 2,000 leaves 4 < 5, so no row.
    for algorithm in ("maml", "fomaml"):
        assert by_start[algorithm, 0][0] < 0 and by_start[algorithm, 0][1] == 8
        assert by_start[algorithm, 100][1] == 7
        assert by_start[algorithm, 500][0] > 0.99 and by_start[algorithm, 500][1] == 7
        assert by_start[algorithm, 1000][1] == 6
        assert (algorithm, 2000) not in by_start
    text = windows_markdown(table)
    assert "from 0" in text and "from 1,000" in text and "from 2,000" not in text
    from metalandscape.figures.windows import draw_windows

    pdf, png = draw_windows(table, 500, tmp_path / "windows.pdf")
    assert pdf.stat().st_size > 0 and png.stat().st_size > 0


def test_edge_of_stability_claim_reads_sharpness_against_two_over_alpha():
    """Claim 8: α·E[λmax(θ̃)]/2 averaged over checkpoints whose support loss is above the level;
    1.0 exactly on 2/α."""
    alpha = 0.1
    on_line = np.full(len(EPOCHS), 2 / alpha)
    loss = np.array([1.6, 1.2, 0.9, 0.5, 0.35, 0.2, 0.1, 0.05])  # 5 checkpoints above 0.3
    sharper = on_line.copy()
    sharper[5:] = 5.0  # below the line only once the loss is low: still on it while above
    dataset = make_dataset(
        {
            "hessian_top_eigenvalue_mean": sharper,
            "support_loss_mean": loss,
            "inner_step_size": np.full(len(EPOCHS), alpha),
            "inner_steps": np.full(len(EPOCHS), 5.0),
        }
    )
    table = check_claims([dataset], Thresholds())
    rows = table[table.claim == 8]
    assert set(rows.phase) == {"all checkpoints (extension)"}
    assert set(rows.verdict) == {"holds"}
    assert np.allclose(rows.value, 1.0, atol=0.01) and set(rows.checkpoints) == {8}
    assert set(rows.threshold) == {0.8, 1.2}
    doubled = dataset.assign(hessian_top_eigenvalue_mean=dataset.hessian_top_eigenvalue_mean * 2)
    rows = check_claims([doubled], Thresholds())
    rows = rows[rows.claim == 8]
    assert dict(zip(rows.direction, rows.verdict)) == {">=": "holds", "<=": "does not hold"}
    assert "extension, not a claim of the paper" in rows.title.iloc[0]


def test_a_setting_that_ends_before_the_window_says_so_instead_of_vanishing():
    """Runs that stop before iteration 500 (the default run's) get "too few checkpoints in the
    window" rows for every statistic, and their transient goes to the early phase."""
    dataset = make_dataset(
        {"trajectory_coherence": RISING, "test_target_accuracy_mean": RISING}
    ).assign_coords(iteration=lambda d: d["iteration"] / 20)  # 0-175: all before 500
    table = check_claims([dataset], Thresholds())
    window = table[(table.claim == 4) & (table.phase == "paper window")]
    assert len(window) == 4 and set(window.verdict) == {TOO_FEW}  # 2 algorithms × R and ρ
    assert set(window.window) == {"iterations ≥ 500: no checkpoint"}
    early = table[(table.claim == 4) & (table.phase == EARLY_PHASE)]
    assert set(early.verdict) == {"holds"} and (early.checkpoints == 8).all()
