"""`bench reproduce mini --samplers`: the option's parsing and refusals, the deadline's count of the extra sets, and a
tiny run on the CPU that scores the last point with other samplers beside the preset's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cli.app import app
from bench.config import resolve
from bench.errors import BenchError
from bench.registry import mini_models
from bench.reproduce.latent import LATENT_METRICS
from bench.reproduce.mini import MINI_METRICS
from bench.reproduce.samplers import DOPRI5_NFE_GUESS, Sampler, check_samplers, parse_samplers
from tests.test_reproduce_benchmark import real_features
from tests.test_reproduce_mini import TINY, cheap_fid, fabricated_carry, invoke, needs_taesd, runner  # noqa: F401


def jobs(*runs: str, **sample: object) -> list[tuple[str, int, object]]:
    return [(run, 0, resolve(preset=mini_models()[run], overrides=[{"sample": sample}])) for run in runs]


def test_entries_parse_in_order_with_the_presets_steps_by_default() -> None:
    samplers = parse_samplers(" euler:100, heun ,dopri5,ddim:25")
    assert samplers == (Sampler("euler", 100), Sampler("heun"), Sampler("dopri5"), Sampler("ddim", 25))
    assert [s.text for s in samplers] == ["euler:100", "heun", "dopri5", "ddim:25"]
    assert parse_samplers("") == ()
    lapflow = resolve(preset=mini_models()["lapflow"])
    assert [s.name(lapflow) for s in samplers[:3]] == ["euler:100", "heun:50", "dopri5"]
    heun = samplers[1].config(lapflow).sample
    assert (heun.solver, heun.steps, heun.atol) == ("heun", 50, 1e-5) and lapflow.sample.solver == "euler"
    dopri5 = samplers[2].config(lapflow)
    assert (dopri5.sample.solver, dopri5.sample.atol, dopri5.sample.rtol) == ("dopri5", 1e-5, 1e-5)
    assert dopri5.model == lapflow.model and dopri5.train == lapflow.train  # only the sampling differs
    dit = resolve(preset=mini_models()["dit"])
    assert [s.supports(dit) for s in samplers] == [False, False, False, True]
    assert samplers[0].nfe_guess(lapflow) == 100 and samplers[1].nfe_guess(lapflow) == 100  # Heun: 2 per step
    assert samplers[2].nfe_guess(lapflow) == DOPRI5_NFE_GUESS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rk4", "unknown solver 'rk4' in 'rk4'; give solver\\[:steps\\] with a solver of euler, heun, dopri5"),
        ("euler:0", "'euler:0' needs at least one step"),
        ("euler:-3", "'euler:-3' needs at least one step"),
        ("euler:ten", "the steps of 'euler:ten' must be a whole number"),
        ("euler:", "the steps of 'euler:' must be a whole number"),
        ("dopri5:80", "dopri5 adapts its steps .* give it as 'dopri5', not 'dopri5:80'"),
        ("euler:100,dopri5,euler:100", "'euler:100' is listed twice"),
    ],
)
def test_bad_entries_get_one_sentence(text: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        parse_samplers(text)


def test_an_entry_repeating_a_runs_own_sampler_is_refused_and_skips_are_named_once() -> None:
    runs = jobs("lapflow", "lfm", "dit")
    with pytest.raises(BenchError, match=r"'euler:50' is the sampler every point of 'lapflow' is scored with"):
        check_samplers(parse_samplers("dopri5,euler:50"), runs)
    with pytest.raises(BenchError, match=r"'euler' is the sampler .* \(euler:50\)"):
        check_samplers(parse_samplers("euler"), runs)  # steps left out: the preset's, so the same sampler
    with pytest.raises(BenchError, match=r"'ddpm:50' is the sampler every point of 'dit' is scored with"):
        check_samplers(parse_samplers("ddpm:50"), runs)
    with pytest.raises(BenchError, match=r"'heun' and 'heun:50' sample 'lapflow' the same way"):
        check_samplers(parse_samplers("heun,heun:50"), runs)
    notes = check_samplers(parse_samplers("euler:100,dopri5,ddim:50"), [*runs, *jobs("lapflow")])
    assert notes == [
        "--samplers: dit skip 'euler:100' (a flow solver: euler, heun, dopri5; not theirs).",
        "--samplers: dit skip 'dopri5' (a flow solver: euler, heun, dopri5; not theirs).",
        "--samplers: lapflow, lfm skip 'ddim:50' (a diffusion solver: ddpm, ddim; not theirs).",
    ]
    # --set sample.steps=100 moves every default: euler:100 then repeats it
    with pytest.raises(BenchError, match="'euler:100' is the sampler"):
        check_samplers(parse_samplers("euler:100"), jobs("lfm", steps=100))


def test_the_deadline_counts_each_extra_set_by_its_nfe() -> None:
    from bench.reproduce.deadline import SCORE_FIXED_SHARE, SCORE_GUESS_S, score_guess, start_guess

    lapflow, dit = (cfg for _, _, cfg in jobs("lapflow", "dit"))
    samplers = parse_samplers("euler:100,dopri5")
    plain = score_guess([8, 16], lapflow, None)
    assert plain == 2 * SCORE_GUESS_S and score_guess([8, 16], dit, None, samplers=samplers) == plain  # DiT skips
    # euler:100 and dopri5 (~100 NFE) each cost a set whose sampling part is twice the preset's 50 steps'
    two = SCORE_GUESS_S * (SCORE_FIXED_SHARE + (1 - SCORE_FIXED_SHARE) * 2)
    assert score_guess([16], lapflow, None, samplers=samplers) == pytest.approx(SCORE_GUESS_S + 2 * two)
    added = start_guess([16], lapflow, None, False, samplers) - start_guess([16], lapflow, None)
    assert added == pytest.approx(2 * two)
    assert score_guess([], lapflow, None, samplers=samplers) == 0.0


def test_the_cli_refuses_bad_samplers_before_anything_trains(tmp_path: Path) -> None:
    args = ["reproduce", "mini", "--real-features", str(tmp_path / "f.safetensors"), "--carry", str(tmp_path)]
    args += ["--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "runs")]
    for text, message in (("rk45", "unknown solver 'rk45'"), ("dopri5:40", "give it as 'dopri5'")):
        result = runner.invoke(app, [*args, "--samplers", text])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def _comparable(record: object) -> tuple:
    """A record without what a second training and scoring of the same run measures anew (its seconds, its time)."""
    timing = {"sample_seconds", "score_seconds", "gpu_seconds"}
    extra = {k: v for k, v in record.extra.items() if k not in timing}
    return record.metric, record.value, record.protocol, record.sampling, record.config, record.seeds, extra


@needs_taesd
def test_the_last_point_is_scored_with_each_sampler_and_the_default_records_stay(
    tmp_path: Path,
    cheap_fid: None,  # noqa: F811
) -> None:
    from bench.checkpoint import load_run
    from bench.report.build import generate
    from bench.results import load_records
    from bench.sample import generate as sample

    carry = fabricated_carry(tmp_path)
    feats = real_features(carry)
    sets = [a for s in TINY for a in ("--set", s)] + ["--set", "sample.steps=2"]
    common = ["--real-features", feats, "--carry", carry, "--models", "lapflow,dit", "--seeds", "0", "--images", 16,
              "--points", 2, "--num-samples", 6, "--batch-size", 4, "--bootstrap", 2, *sets]  # fmt: skip
    bad = runner.invoke(app, ["reproduce", "mini", *map(str, common), "--samplers", "euler:2",
                              "--out", str(tmp_path / "bad"), "--work-dir", str(tmp_path / "bad-runs")])  # fmt: skip
    assert bad.exit_code == 1 and "'euler:2' is the sampler every point of 'lapflow'" in bad.output
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad-runs").exists()  # refused before training
    plain, extra = tmp_path / "plain", tmp_path / "extra"
    invoke("reproduce", "mini", *common, "--out", plain, "--work-dir", tmp_path / "runs-plain")
    out = invoke("reproduce", "mini", *common, "--samplers", "euler:8,dopri5", "--out", extra,
                 "--work-dir", tmp_path / "runs-extra", "--bundle", tmp_path / "b.tar.gz").output  # fmt: skip
    assert out.count("dit skip 'euler:8'") == 1 and out.count("dit skip 'dopri5'") == 1
    before, after = load_records(plain), load_records(extra)
    defaults = [r for r in after if "sampler" not in r.extra]
    assert sorted(map(_comparable, defaults), key=repr) == sorted(map(_comparable, before), key=repr)
    samplers = [r for r in after if "sampler" in r.extra]
    # lapflow's last point, two samplers (Inception metrics and latent statistics); DiT takes neither
    assert len(samplers) == 2 * (len(MINI_METRICS) + len(LATENT_METRICS))
    by = {(r.extra["sampler"], r.metric): r for r in samplers}
    assert {r.extra["run"] for r in samplers} == {"lapflow"} and {r.extra["images_seen"] for r in samplers} == {16}
    assert all(r.extra["final"] and r.extra["point"] == 1 for r in samplers)
    euler, dopri5 = by[("euler:8", "fid")], by[("dopri5", "fid")]
    assert euler.config["sample"]["solver"] == euler.sampling["solver"] == "euler"
    assert euler.config["sample"]["steps"] == euler.sampling["steps"] == 8
    assert euler.sampling["nfe"] == 8 and euler.extra["nfe_per_sample"] == 8 and euler.extra["nfe_by_batch"] == [8, 8]
    assert dopri5.config["sample"]["solver"] == dopri5.sampling["solver"] == "dopri5"
    assert (dopri5.sampling["atol"], dopri5.sampling["rtol"]) == (1e-5, 1e-5)
    assert euler.extra["fid_bootstrap"]["reps"] == 2 and dopri5.extra["sample_batch"] == 4
    assert euler.protocol["name"] == by[("euler:8", "fid")].protocol["name"] == "fid-tf-6-celebahq64"
    # dopri5's NFE is what sampling the run's EMA with it takes, batch by batch (4 + 2 samples)
    model, cfg = load_run(tmp_path / "runs-extra" / "lapflow-seed0")
    spec = Sampler("dopri5").config(cfg).sample
    with torch.random.fork_rng():
        nfes = [b.nfe for b in sample(model, range(6), spec, 4, cfg.train.precision)]
    assert dopri5.extra["nfe_by_batch"] == nfes and dopri5.sampling["nfe"] == max(nfes)
    assert dopri5.extra["nfe_per_sample"] == pytest.approx((4 * nfes[0] + 2 * nfes[1]) / 6)
    assert by[("dopri5", "fid")].value != by[("euler:8", "fid")].value != defaults[0].value
    folder = extra / "mini" / "celebahq64"
    summary = json.loads(next((folder / "provenance").glob("*.json")).read_text())
    assert summary["samplers"]["entries"] == ["euler:8", "dopri5"] and len(summary["samplers"]["skipped"]) == 2
    grid = json.loads(next((folder / "grids").glob("*.json")).read_text())
    assert len(grid["rows"]) == 2 * 2  # the extra samplers add no grid rows
    invoke("reproduce", "mini-ingest", tmp_path / "b.tar.gz", "--out", tmp_path / "ingested")  # records checked
    assert sorted(map(_comparable, load_records(tmp_path / "ingested")), key=repr) == sorted(
        map(_comparable, after), key=repr
    )
    # the report: a table of their own; the headline table is the same as without them
    report, base = (generate(r, tmp_path / "no-runs", Path(__file__).parents[1] / "results" / "paper") for r in
                    (extra, plain))  # fmt: skip
    table = next(t for t in report.tables if t.id == "mini-celebahq64-samplers")
    assert [(row[1].text, row[4].text) for row in table.rows] == [
        ("lapflow", "euler:2 (default)"),
        ("lapflow", "dopri5"),
        ("lapflow", "euler:8"),
    ]
    text = report.files["tables.md"].decode()
    assert "#### Mini benchmark, celebahq 64 px: other samplers at each run's last point" in text
    headline, plain_headline = (next(t for t in r.tables if t.id == "mini-celebahq64") for r in (report, base))
    assert not [i for i in headline.used + headline.placed if "sampler" in i.record.extra]
    fid = headline.headers.index("FID [fid-tf-6-celebahq64]")
    assert [row[fid].text for row in headline.rows] == [row[fid].text for row in plain_headline.rows]
    assert not any(t.id == "other" for t in report.tables)  # every sampler record is placed
