"""``vla-align report``: one self-contained report.html per run (figures embedded, no network).

Reads what every run writes (config.json, metrics.jsonl, metrics.json, eval_episodes.jsonl, the
checkpoint) and, when the dataset is still on disk, recomputes the model-based health indicators on the
held-out split and replays the failed evaluation episodes for their three-view panels.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import write_text
from ..diagnostics.three_view import ThreeView
from ..errors import UserError
from ..modalities import PAIRS
from ..progress import console
from . import figures
from .flags import CHANCE_FRACTION, Applicability, applicability, pair_flags
from .text import LANGS, TEXT

R10_THRESHOLD = 0.70  # the chapter's checklist: in-domain V<->L R@10 >= 70 %
COHERENCE_THRESHOLD = 0.6  # gamma_VA (0.1-1 Hz) >= 0.6
OFFSET_THRESHOLD_MS = 80.0  # video-action offset P50 < 80 ms
RETRIEVAL_COLS = ("R@1", "R@5", "R@10", "MRR", "nDCG@10")


@dataclass
class ReportInputs:
    """What the report shows, gathered from a run (the model-based parts may be missing)."""

    run_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    health: Any = None  # health.Health
    failures: list[ThreeView] = field(default_factory=list)
    episodes_found: bool = False
    notes: list[str] = field(default_factory=list)


def _read_history(path: Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """The per-step log; a last line cut short by a killed run is skipped (with a note)."""
    if not path.is_file():
        return []
    out = []
    lines = [(n, line) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    for i, (n, line) in enumerate(lines):
        torn = False
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record, torn = None, True  # only a line that does not parse can be one cut short
        if isinstance(record, dict):
            out.append(record)
        elif torn and i == len(lines) - 1:
            if notes is not None:
                notes.append(f"{path}: the last line (line {n}) was cut short (an interrupted run) and is skipped")
        else:
            raise UserError(f"{path}: line {n} is not a JSON object; the run's log is damaged")
    return out


def gather(run_dir: Path, max_failures: int = 6, data: Path | None = None, device: str = "cpu") -> ReportInputs:
    """What the report shows; the model-based parts run on ``device`` (``auto``: CUDA when visible)."""
    from ..checkpoint import read_run_config
    from ..runs import read_metrics
    from ..sim.base import EPISODES_FILE, read_episodes

    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir}: no config.json; pass the directory of a run made by `vla-align train`")
    config = read_run_config(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics, damage = read_metrics(metrics_path)
    notes: list[str] = []
    inputs = ReportInputs(run_dir, config, metrics, _read_history(run_dir / "metrics.jsonl", notes), notes=notes)
    if damage is not None:
        inputs.notes.append(f"{metrics_path} is damaged ({damage}): run `vla-align eval --run {run_dir}` again")
    elif not metrics:
        inputs.notes.append(f"{metrics_path} missing: run `vla-align eval --run {run_dir}` first")
    if metrics.get("run/finished") == 0:
        inputs.notes.append(
            f"training did not finish (step {metrics.get('run/step', 0):.0f} of {metrics.get('run/steps', 0):.0f}): "
            "these numbers are of an intermediate checkpoint"
        )
    episodes = []
    if (run_dir / EPISODES_FILE).is_file():
        episodes = read_episodes(run_dir / EPISODES_FILE)
        inputs.episodes_found = True
    if not (run_dir / "checkpoint" / "model.safetensors").is_file():
        inputs.notes.append("no checkpoint/model.safetensors: model-based diagnostics skipped")
        return inputs
    dataset = data or Path(config.get("dataset", {}).get("path", ""))
    _model_based(inputs, dataset, episodes, max_failures, device)
    return inputs


MIN_HEALTH_EPISODES = 4  # held-out episodes the health indicators need (CKA / CCA, the coherence fit and test halves)


def _model_based(
    inputs: ReportInputs, dataset: Path, episodes: list[Any], max_failures: int, device: str = "cpu"
) -> None:
    """The model-based parts on ``device`` (``auto``: CUDA when visible), in bf16 autocast on CUDA and
    float32 on the CPU."""
    from ..sim.base import inference_autocast
    from ..train import resolve_device

    target = resolve_device(device, "--device")
    with inference_autocast(target):
        _model_diagnostics(inputs, dataset, episodes, max_failures, str(target))


def _model_diagnostics(
    inputs: ReportInputs, dataset: Path, episodes: list[Any], max_failures: int, device: str
) -> None:
    """Health indicators on the held-out split (dataset on disk) and failure panels replayed in the
    run's simulator (from the checkpoint and config.json alone where the simulator allows it)."""
    from dataclasses import replace

    from ..data.split_file import run_splits
    from ..runs import load_model
    from ..sim import EvalContext, simulator_for

    description = inputs.config.get("dataset", {})
    sim = simulator_for(description.get("info") or {})
    have_data = (dataset / "meta" / "info.json").is_file()
    if not have_data and not (episodes and sim is not None):
        inputs.notes.append(f"dataset {dataset} not found: AMat, coherence, CKA/CCA and failure replays skipped")
        return
    model, cfg = load_model(inputs.run_dir, device)
    splits = run_splits(cfg.data.splits)  # the split file the run was trained with
    table = None
    if have_data:
        from .health import compute_health

        t0 = time.perf_counter()
        table = replace(cfg.data, splits=splits).read(dataset, cfg.eval.split, cfg.eval.max_episodes or None)
        if table.num_episodes < MIN_HEALTH_EPISODES:
            inputs.notes.append(
                f"the {cfg.eval.split} split has {table.num_episodes} episode(s): AMat, MI bounds, coherence and "
                f"CKA/CCA need at least {MIN_HEALTH_EPISODES} (`vla-align data split` with a larger --test)"
            )
        else:
            inputs.health = compute_health(model, table, cfg.eval.split, cfg.eval.seed)
            console.print(
                f"report: health indicators on {table.num_episodes} {cfg.eval.split} episodes "
                f"in {time.perf_counter() - t0:.1f} s"
            )
    else:
        inputs.notes.append(f"dataset {dataset} not found: AMat, coherence, CKA/CCA skipped")
    if not episodes or sim is None:
        return
    t0 = time.perf_counter()
    split = cfg.eval.sim.split
    sim_table = table if split == cfg.eval.split else None
    if sim_table is None and have_data:
        sim_table = replace(cfg.data, splits=splits).read(dataset, split)
    ctx = EvalContext.from_run(description, split, sim_table)
    projection = inputs.health.projection if inputs.health is not None else None
    inputs.failures = sim.three_views(model, ctx, episodes, projection, max_failures)
    console.print(f"report: {len(inputs.failures)} failure panels in {time.perf_counter() - t0:.1f} s")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float | int | np.floating):
        return f"{float(v):.{digits}f}"
    return str(v)


def _series(history: list[dict[str, Any]], prefix: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for rec in history:
        for k, v in rec.items():
            if k.startswith(prefix) and isinstance(v, int | float) and math.isfinite(v):
                out[k.removeprefix(prefix)].append((float(rec["step"]), float(v)))
    return dict(sorted(out.items()))


def _verdict(ok: bool | None, t: dict[str, str]) -> tuple[str, str]:
    if ok is None:
        return "na", t["na"]
    return ("pass", t["pass"]) if ok else ("fail", t["fail"])


def render(inputs: ReportInputs, lang: str = "zh") -> str:
    """The self-contained HTML report for ``inputs``, its text in ``lang`` (one of :data:`LANGS`)."""
    import jinja2

    if lang not in LANGS:
        raise UserError(f"--lang must be one of {', '.join(LANGS)}, got {lang!r}")
    t = TEXT[lang]
    m, h, hist = inputs.metrics, inputs.health, inputs.history
    scope = applicability(inputs.config, h.fps if h is not None else None)
    verdicts = _health_verdicts(m, h, t, scope)
    pair_rows = _pair_rows(inputs, t)
    with figures.language(lang) as font:
        context: dict[str, Any] = {
            "curve_figs": _curve_figures(hist),
            "retrieval_cols": RETRIEVAL_COLS,
            "retrieval_rows": _retrieval_rows(m),
            **_closed_loop(m, t),
            "verdicts": verdicts,
            **_diagnostics(hist, h),
            "conflict_figs": _conflict_figures(hist),
            **_failures(inputs, t),
            "cards": _summary_cards(m, verdicts, t) + _pair_cards(pair_rows, t),
            "pair_rows": pair_rows,
            "coherence_reason": scope.coherence_reason(t),
            "figure_lang": _figure_note(lang, font, t),
        }
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vla_align.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return env.get_template("report.html.j2").render(**_page_context(inputs, lang, t), **context)


def _figure_note(lang: str, font: str | None, t: dict[str, str]) -> str:
    """The notes' line on the figures' language (and a console line when Chinese labels had no font)."""
    if lang == "en":
        return t["figure_lang"]
    if font is not None:
        return t["figure_lang_cjk"].format(font=font)
    console.print("report: no CJK font found (install fonts-wqy-microhei); figure labels stay English")
    return t["figure_lang_no_cjk"]


def _pair_rows(inputs: ReportInputs, t: dict[str, str]) -> list[dict[str, str]]:
    """One row per contrastive pair that is not learning (:func:`flags.pair_flags`), with its numbers
    and the reasons in words."""
    h = inputs.health
    batch = (inputs.config.get("train") or {}).get("batch_size")
    heldout = {p: v for p, v in h.mi.items() if p != "log_n"} if h is not None else None
    rows = []
    for flag in pair_flags(inputs.history, batch, heldout):
        why = []
        if "chance" in flag.reasons and flag.loss is not None and flag.log_b is not None:
            threshold = _fmt(CHANCE_FRACTION * flag.log_b, 2)
            why.append(
                t["pair_chance"].format(
                    loss=_fmt(flag.loss, 2), threshold=threshold, log_b=_fmt(flag.log_b, 2), batch=batch
                )
            )
        if "mi_train" in flag.reasons:
            why.append(t["pair_mi_train"].format(mi=_fmt(flag.mi_train, 2)))
        if "mi_heldout" in flag.reasons:
            why.append(t["pair_mi_heldout"].format(mi=_fmt(flag.mi_heldout, 2)))
        rows.append(
            {
                "pair": flag.pair,
                "loss": _fmt(flag.loss, 2),
                "log_b": _fmt(flag.log_b, 2),
                "mi_train": _fmt(flag.mi_train, 2),
                "mi_heldout": _fmt(flag.mi_heldout, 2),
                "why": t["reason_sep"].join(why),
                "learning": "1" if flag.learning else "",
                "badge": "warn" if flag.learning else "fail",
                "word": t["not_generalising"] if flag.learning else t["not_learning"],
                "meaning": t["pair_meaning_heldout"] if flag.learning else t["pair_meaning"],
            }
        )
    return rows


def _pair_cards(rows: list[dict[str, str]], t: dict[str, str]) -> list[dict[str, Any]]:
    """A red "not learning" card per pair that does not learn on the training batches."""
    return [
        {
            "label": t["pair_card"].format(pair=row["pair"]),
            "value": row["loss"],
            "badge": "fail",
            "word": t["not_learning"],
            "note": t["pair_card_loss"].format(log_b=row["log_b"]),
        }
        for row in rows
        if not row["learning"]
    ]


def _page_context(inputs: ReportInputs, lang: str, t: dict[str, str]) -> dict[str, Any]:
    """The page's header (run, preset, dataset, version, time), its config dump and its notes."""
    h = inputs.health
    return {
        "lang": lang,
        "t": t,
        "version": __version__,
        "run_name": inputs.run_dir.name,
        "run_dir": str(inputs.run_dir),
        "preset": inputs.config.get("preset", "—"),
        "dataset": inputs.config.get("dataset", {}).get("path", "—"),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "config_json": json.dumps(
            {k: v for k, v in inputs.config.items() if k != "dataset"}, indent=2, ensure_ascii=False
        ),
        "pairs": PAIRS,
        "notes": list(inputs.notes) + (list(h.notes) if h is not None else []),
    }


def _curve_figures(hist: list[dict[str, Any]]) -> list[str]:
    """Training losses, the policy's training accuracy and the validation dual metric over steps."""
    curve_figs = []
    losses = _series(hist, "loss/")
    if losses:
        curve_figs.append(figures.line_chart(losses, figures.label("training_losses"), figures.label("loss")))
    accuracy = _series(hist, "policy/")
    if "accuracy" in accuracy:
        curve_figs.append(
            figures.line_chart({"policy/accuracy": accuracy["accuracy"]}, figures.label("policy_accuracy"))
        )
    val = _series(hist, "val/")
    chosen = {k: v for k, v in val.items() if k in ("score", "sim/success_rate", "retrieval/image_to_text/R@10")}
    if chosen:
        curve_figs.append(
            figures.line_chart(chosen, figures.label("val_dual"), thresholds={"R@10 0.70": R10_THRESHOLD})
        )
    return curve_figs


def _retrieval_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per retrieval direction in the metrics: its query count and :data:`RETRIEVAL_COLS`."""
    retrieval_rows = []
    for key in sorted({k.rsplit("/", 1)[0] for k in m if k.startswith("retrieval/") and k.endswith("/R@1")}):
        name = key.removeprefix("retrieval/").replace("_to_", " → ")
        retrieval_rows.append(
            {
                "name": name,
                "queries": _fmt(m.get(f"{key}/queries"), 0),
                "values": [_fmt(m.get(f"{key}/{c}")) for c in RETRIEVAL_COLS],
            }
        )
    return retrieval_rows


def _closed_loop(m: dict[str, Any], t: dict[str, str]) -> dict[str, list[Any]]:
    """``sim_rows`` (success / SPL / steps of the real and the shuffled conditions), ``ablation_rows`` and
    ``sim_figs`` (success per instruction word / level); all empty without closed-loop metrics."""
    sim_rows: list[dict[str, str]] = []
    ablation_rows: list[dict[str, str]] = []
    sim_figs: list[str] = []
    if "sim/success_rate" in m:
        base = float(m["sim/success_rate"])
        for name, prefix in (
            ("real", "sim"),
            ("shuffle_text", "ablation/shuffle_text/sim"),
            ("shuffle_image", "ablation/shuffle_image/sim"),
        ):
            if f"{prefix}/success_rate" not in m:
                continue
            s = float(m[f"{prefix}/success_rate"])
            sim_rows.append(
                {
                    "name": t[name],
                    "success": _fmt(s),
                    "spl": _fmt(m.get(f"{prefix}/spl")),
                    "steps": _fmt(m.get(f"{prefix}/mean_steps"), 1),
                    "drop": "—" if name == "real" else _fmt(base - s),
                }
            )
            if name != "real":
                ablation_rows.append(_ablation_row(name, base, s, t))
        groups = {
            k.removeprefix("sim/").removesuffix("/success_rate"): float(v)
            for k, v in m.items()
            if k.startswith("sim/by_") and k.endswith("/success_rate")
        }
        if groups:
            sim_figs.append(figures.bar_chart(groups, figures.label("success_by_group")))
    return {"sim_rows": sim_rows, "ablation_rows": ablation_rows, "sim_figs": sim_figs}


def _ablation_row(name: str, base: float, s: float, t: dict[str, str]) -> dict[str, str]:
    """Shuffled text must cost at least half the success rate ``base``, shuffled images some of it."""
    ok: bool | None = (base - s) >= 0.5 * base if name == "shuffle_text" else (base - s) > 0
    if base == 0:
        ok = None  # nothing to lose: the ablation says nothing
    return {"name": t[name], "success": _fmt(s), "drop": _fmt(base - s), "badge": _verdict(ok, t)[0]}


def _health_verdicts(m: dict[str, Any], h: Any, t: dict[str, str], scope: Applicability) -> list[dict[str, str]]:
    """The chapter's checklist: V<->L R@10, in-band γ_VA and the video-action offset against thresholds;
    an indicator that does not apply to the run (``scope``) is "not applicable", with the reason."""
    r10 = m.get("retrieval/image_to_text/R@10")
    coh = h.band_coherence if h is not None else m.get("health/coherence/band_average")
    offset = h.offset_p50_ms if h is not None else m.get("health/offset_p50_ms")
    verdicts = []
    for name, value, threshold, ok, reason in (
        (t["r10"], r10, f"≥ {R10_THRESHOLD:.2f}", None if r10 is None else r10 >= R10_THRESHOLD, ""),
        (
            t["coh"],
            coh,
            f"≥ {COHERENCE_THRESHOLD}",
            None if coh is None else coh >= COHERENCE_THRESHOLD,
            scope.coherence_reason(t),
        ),
        (
            t["offset"],
            offset,
            f"< {OFFSET_THRESHOLD_MS:.0f} ms",
            None if offset is None else offset < OFFSET_THRESHOLD_MS,
            scope.offset_reason(t),
        ),
    ):
        badge, word = _verdict(None if reason else ok, t)
        if value is None and not reason:
            word = t["not_measured"]  # it applies, but nothing measured it: not the same as "not applicable"
        verdicts.append(
            {
                "name": name,
                "value": _fmt(value) if value is not None else t["not_measured"],
                "threshold": threshold,
                "badge": badge,
                "verdict": word,
                "reason": reason,
            }
        )
    return verdicts


def _diagnostics(hist: list[dict[str, Any]], h: Any) -> dict[str, list[Any]]:
    """``mi_figs`` (the MI lower bound over training) and, from the health indicators ``h`` when there are
    any, ``amat_figs``, ``mi_rows``, ``spectral_figs`` and ``similarity_rows``."""
    mi_figs = []
    train, val = figures.label("train"), figures.label("val")
    mi_curves = {f"{train} {k}": v for k, v in _series(hist, "health/mi_bound/").items()}
    mi_curves.update({f"{val} {k}": v for k, v in _series(hist, "val/health/mi_bound/").items()})
    if mi_curves:
        mi_figs.append(figures.line_chart(mi_curves, figures.label("mi_title"), "nats"))
    if h is None:
        return {"mi_figs": mi_figs, "amat_figs": [], "mi_rows": [], "spectral_figs": [], "similarity_rows": []}
    return {"mi_figs": mi_figs, **_health_diagnostics(h)}


def _health_diagnostics(h: Any) -> dict[str, list[Any]]:
    """AMat heat maps and per-class hit rates, the MI table, the γ_VA spectrum and the CKA / CCA rows."""
    amat_figs, spectral_figs, mi_rows, similarity_rows = [], [], [], []
    for direction, (matrix, classes) in h.amat.items():
        amat_figs.append(figures.heatmap(matrix, classes, classes, figures.label("amat_title", direction=direction)))
    if "image->text" in h.hit_rate:
        amat_figs.append(figures.bar_chart(h.hit_rate["image->text"], figures.label("hit_rate_title")))
    mi_rows.append(
        {
            "name": f"{h.split} (N={h.samples}, log N={h.mi['log_n']:.2f})",
            "values": [_fmt(h.mi.get(p)) for p in PAIRS],
        }
    )
    for group, values in h.mi_groups.items():
        mi_rows.append({"name": group, "values": [_fmt(values.get(p)) for p in PAIRS]})
    if h.freqs is not None and h.gamma is not None and h.band is not None:
        spectral_figs.append(
            figures.coherence_chart(
                h.freqs,
                h.gamma,
                h.band,
                COHERENCE_THRESHOLD,
                figures.label("gamma_title", split=h.split, value=h.band_coherence),
            )
        )
    for pair in PAIRS:
        if f"cka/{pair}" in h.similarity:
            similarity_rows.append(
                {"pair": pair, "cka": _fmt(h.similarity[f"cka/{pair}"]), "cca": _fmt(h.similarity[f"cca/{pair}"])}
            )
    return {
        "amat_figs": amat_figs,
        "mi_rows": mi_rows,
        "spectral_figs": spectral_figs,
        "similarity_rows": similarity_rows,
    }


def _conflict_figures(hist: list[dict[str, Any]]) -> list[str]:
    """The last gradient-cosine histograms, the mean cosine per pair and the balancer weights over steps."""
    conflict_figs = []
    last_hist = next((r for r in reversed(hist) if "conflict/hist_edges" in r), None)
    if last_hist is not None:
        hists = {k.removeprefix("conflict/hist/"): v for k, v in last_hist.items() if k.startswith("conflict/hist/")}
        conflict_figs.append(
            figures.histograms(
                hists, last_hist["conflict/hist_edges"], figures.label("grad_cos_title", step=last_hist["step"])
            )
        )
        cos = _series(hist, "conflict/cos/")
        if cos:
            conflict_figs.append(figures.line_chart(cos, figures.label("mean_cos_title")))
    weights = _series(hist, "balance/weight/")
    if weights:
        conflict_figs.append(figures.line_chart(weights, figures.label("balancer_title"), figures.label("weight")))
    return conflict_figs


def _failures(inputs: ReportInputs, t: dict[str, str]) -> dict[str, Any]:
    """``failures`` (one three-view panel per failed episode) and ``failures_empty`` (why there are none)."""
    m = inputs.metrics
    failures = [
        {
            "title": v.title,
            "figure": figures.three_view_figure(v, COHERENCE_THRESHOLD),
            "notes": v.notes,
            "violations": {k: s for k, s in v.violation_steps.items() if s},
            "violation_count": v.violation_count,
        }
        for v in inputs.failures
    ]
    if inputs.failures:
        failures_empty = ""
    elif not inputs.episodes_found and "sim/success_rate" in m:
        failures_empty = t["no_episodes"]
    elif "sim/success_rate" not in m:
        failures_empty = t["no_sim"]
    else:
        failures_empty = t["no_failures"]
    return {"failures": failures, "failures_empty": failures_empty}


def _summary_cards(m: dict[str, Any], verdicts: list[dict[str, str]], t: dict[str, str]) -> list[dict[str, Any]]:
    """The cards at the top: closed-loop success and SPL (when measured), then one per health verdict."""
    cards: list[dict[str, Any]] = []
    if "sim/success_rate" in m:
        for label, value in ((t["success"], m["sim/success_rate"]), (t["spl"], m.get("sim/spl"))):
            cards.append({"label": label, "value": _fmt(value), "badge": None, "word": "", "note": ""})
    for row in verdicts:
        value = row["value"] if row["badge"] != "na" else "—"  # a number that is not scored is not headlined
        cards.append(
            {"label": row["name"], "value": value, "badge": row["badge"], "word": row["verdict"], "note": row["reason"]}
        )
    return cards


def _check_out(path: Path) -> None:
    """The report's destination must be a file path whose existing parents are folders."""
    if path.is_dir():
        raise UserError(f"--out {path}: is a folder; give a file name such as {path / 'report.html'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {path}: {parent} is a file, not a folder; choose another --out")
            break


def write_report(
    run_dir: str | Path,
    lang: str = "zh",
    out: str | Path | None = None,
    max_failures: int = 6,
    data: str | Path | None = None,
    device: str = "cpu",
) -> Path:
    """Write ``report.html`` (or ``out``) for the run in ``run_dir`` and add the ``health/...`` keys to
    its metrics.json; returns the report's path. The model runs on ``device`` (``auto``, ``cpu``, ``cuda``)."""
    from ..runs import update_metrics
    from .health import health_metrics

    if lang not in LANGS:
        raise UserError(f"--lang must be one of {', '.join(LANGS)}, got {lang!r}")
    if max_failures < 0:
        raise UserError(f"--failures must be >= 0, got {max_failures}")
    run = Path(run_dir)
    path = Path(out) if out else run / "report.html"
    _check_out(path)  # before the minutes of work, not after
    inputs = gather(run, max_failures, Path(data) if data else None, device)
    html = render(inputs, lang)
    write_text(path, html)
    if inputs.health is not None and (run / "metrics.json").is_file():  # a damaged one is kept as .bak
        update_metrics(run, health_metrics(inputs.health))
    return path
