"""`run_bench(config)`: the benchmark grid, behaviours × methods × seeds × strengths.

For each behaviour: the unsteered cell (α = 0) first, then for each method and seed the code is
fitted on the behaviour's train split (or read back from OUT/codes/), its strengths are the
`--alphas` grid or the `--alphas auto` search (`saesteer.bench.strength`), and every cell is
generated and scored (`saesteer.bench.evaluate`) unless OUT/cells/ already holds it. Capability
retention (`saesteer.bench.capability`) runs at each seed's best cell within the budget (or every
cell, or never). A failing fit or cell is reported and skipped; the finished cells stay on disk
and a rerun of the same command computes only what is missing.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saesteer.bench.config import BenchSteerConfig
from saesteer.bench.methods import MethodSpec, fit_method, parse_method
from saesteer.bench.store import BenchStore, weights_digest
from saesteer.bench.strength import auto_alphas
from saesteer.bench.summary import best_cell, cell_row, mark_distinguishable, summarise_method

BASELINE = "_unsteered"
PARTS = ("fit", "generation", "scoring", "capability")


@dataclass
class BenchResult:
    """Where the outputs are, the summaries, and what failed."""

    results: Path
    html: Path
    report: dict[str, Any]
    failures: list[dict[str, Any]] = field(default_factory=list)


def _checksum(path: Path) -> str | None:
    from saesteer.paths import sha256_file

    return sha256_file(path) if path.is_file() else None


class _Grid:
    """The run's loaded inputs, timers and progress bar."""

    def __init__(
        self, config: BenchSteerConfig, store: BenchStore, specs: list[MethodSpec], loaded
    ) -> None:
        from tqdm.auto import tqdm

        from saesteer.models import has_hf_weights, load_hf_model, load_model
        from saesteer.sae.io import load_sae

        self.config, self.store, self.specs = config, store, specs
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.failures: list[dict[str, Any]] = []
        self.sae = load_sae(config.sae, config.device).requires_grad_(False) if config.sae else None
        self.model, self.tokenizer = loaded or load_model(config.model, config.device)
        self.generator = (
            load_hf_model(config.model, config.device)
            if has_hf_weights(config.model)
            else self.model
        )
        common: dict[str, Any] = {"model": config.model, "sae": config.sae or None}
        if config.hook_name:
            common["hook_name"] = config.hook_name
        if config.epochs:
            common["epochs"] = config.epochs
        self.context = {
            "model": self.model,
            "tokenizer": self.tokenizer,
            "sae": self.sae,
            "common": common,
        }
        per_seed = len(config.grid() or []) or config.auto_max_probes
        if config.alphas.strip() == "predicted":  # saesteer.steer.asteer.bench
            compare = config.strength_compare
            per_seed = len(config.strength_alphas()) if compare else config.strength_decodes
        total = sum((1 if s.deterministic else config.seeds) * per_seed for s in specs) * len(
            config.behaviours
        ) + len(config.behaviours)
        self.bar = tqdm(total=total, desc="bench-steer", unit="cell", disable=not config.progress)
        self.probe = None

    def capability_probe(self):
        from saesteer.bench.capability import CapabilityProbe

        if self.probe is None:
            self.probe = CapabilityProbe(
                self.generator, self.tokenizer, self.config.n_capability, self.config.brown_tokens
            )
        return self.probe

    def code(self, spec: MethodSpec, behaviour: str, seed: int):
        """The fitted code, read back from OUT/codes/ when a previous run saved it."""
        from saesteer.outputs import Output
        from saesteer.steer.io import META_FILE, load_code, save_code

        folder = self.store.code_dir(behaviour, spec.name, seed)
        if (folder / META_FILE).is_file():
            return load_code(folder, sae=self.sae)
        started = time.time()
        code = fit_method(spec, behaviour, seed, self.context)
        self.seconds["fit"] += time.time() - started
        output = Output(folder, "steering-code")
        with output, output.replacing() as tmp:
            save_code(code, tmp)
        return load_code(folder, sae=self.sae)

    def cell(self, evaluator, key: tuple[str, str, int], code, alpha: float) -> dict[str, Any]:
        """A cell read back from OUT/cells/ or computed and stored."""
        stored = self.store.read_cell(*key, alpha)
        if stored is not None:
            self.bar.update()
            return stored
        cell = {"alpha": alpha, **evaluator.cell(code, alpha)}
        for part in ("generation", "scoring"):
            self.seconds[part] += cell["seconds"][part]
        if self.config.capability == "all" or (
            key[1] == BASELINE and self.config.capability != "none"
        ):
            self.add_capability(code, cell)
        self.store.write_cell(*key, alpha, cell)
        self.bar.update()
        return cell

    def add_capability(self, code, cell: dict[str, Any]) -> None:
        from saesteer.bench.evaluate import steered_or_plain

        started = time.time()
        probe = self.capability_probe()
        controller = code if getattr(code, "controller", False) and cell["alpha"] != 0 else None
        with steered_or_plain(self.generator, code, cell["alpha"]):
            cell["capability"] = probe.measure(controller)
        spent = time.time() - started
        cell["seconds"]["capability"] = spent
        self.seconds["capability"] += spent


def _method_cells(grid: _Grid, evaluator, base: dict, spec: MethodSpec, behaviour: str, seed: int):
    """The cells of one (method, seed), sorted by α; capability added at the best one."""
    config = grid.config
    code = grid.code(spec, behaviour, seed)
    key = (behaviour, spec.name, seed)
    cells: dict[float, dict] = {}

    def ppl_at(alpha: float) -> float:
        cells[alpha] = grid.cell(evaluator, key, code, alpha)
        return cells[alpha]["ppl"]

    alphas = config.grid()
    search = None
    if config.alphas.strip() == "predicted":
        from saesteer.steer.asteer.bench import predicted_alphas

        def cell_at(alpha: float) -> dict[str, Any]:
            ppl_at(alpha)
            return cells[alpha]

        limit = config.budget * base["ppl"]
        search = predicted_alphas(grid, evaluator, key, code, spec, cell_at, limit)
    elif alphas is None:
        auto_alphas(ppl_at, config.budget * base["ppl"], config.auto_max_probes)
    else:
        for alpha in alphas:
            ppl_at(alpha)
    ordered = [cells[a] for a in sorted(cells)]
    best = best_cell(ordered, config.budget * base["ppl"])
    if config.capability == "best" and best is not None and "capability" not in best:
        grid.add_capability(code, best)
        grid.store.write_cell(*key, best["alpha"], best)
    path = grid.store.code_dir(behaviour, spec.name, seed) / "code.safetensors"
    info = {
        "support_size": code.meta.get("support_size"),
        "val_accuracy": code.meta.get("val_accuracy"),
        "code_sha256": _checksum(path),
    }
    if search is not None:
        info["strength_search"] = search
    return ordered, info


def _behaviour_entry(grid: _Grid, name: str) -> dict[str, Any]:
    from saesteer.audit.config import NEUTRAL_PROMPTS
    from saesteer.bench.evaluate import CellEvaluator, held_out_prompts
    from saesteer.steer.behaviours import behaviour

    config = grid.config
    chosen = behaviour(name)
    prompts = held_out_prompts(name, config.n_prompts)
    evaluator = CellEvaluator(
        grid.generator, grid.tokenizer, chosen, prompts, NEUTRAL_PROMPTS, config.max_new_tokens
    )
    base = grid.cell(evaluator, (name, BASELINE, 0), None, 0.0)
    evaluator.baseline = base
    methods: dict[str, Any] = {}
    for spec in grid.specs:
        seeds: dict[int, list[dict]] = {}
        infos: dict[int, dict] = {}
        for seed in range(1 if spec.deterministic else config.seeds):
            try:
                seeds[seed], infos[seed] = _method_cells(grid, evaluator, base, spec, name, seed)
            except Exception as error:  # one failed (method, seed) must not lose the grid
                grid.failures.append(
                    {
                        "behaviour": name,
                        "method": spec.name,
                        "seed": seed,
                        "error": f"{type(error).__name__}: {error}",
                        "traceback": traceback.format_exc(limit=6),
                    }
                )
        if not seeds:
            continue
        entry = summarise_method(seeds, base, config.budget, config.boot)
        entry["codes"] = infos
        entry["cells"] = {seed: [cell_row(c, base) for c in cells] for seed, cells in seeds.items()}
        entry["samples"] = {
            seed: {repr(c["alpha"]): c["texts"][: config.samples] for c in cells}
            for seed, cells in seeds.items()
        }
        methods[spec.name] = entry
    leader = mark_distinguishable(methods, config.boot)
    for entry in methods.values():
        entry.pop("success_lists")
    return {
        "description": chosen.description,
        "prompts": prompts,
        "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
        "unsteered": {**cell_row(base, base), "samples": base["texts"][: config.samples]},
        "methods": methods,
        "leader": leader,
        "limit_ppl": config.budget * base["ppl"],
    }


def _validated_specs(config: BenchSteerConfig) -> list[MethodSpec]:
    from saesteer.steer.behaviours import behaviour

    for name in config.behaviours:
        behaviour(name)
    specs = [parse_method(m) for m in config.methods]
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"--methods lists a method twice: {config.methods}.")
    for spec in specs:
        if spec.needs_sae and not config.sae:
            raise ValueError(f"Method {spec.name} steers in an SAE's latent space: pass --sae.")
        if spec.code_dir and not Path(spec.code_dir, "code.json").is_file():
            raise FileNotFoundError(f"{spec.name}: {spec.code_dir} is not a steering-code folder.")
    return specs


def run_bench(config: BenchSteerConfig, model: Any = None, tokenizer: Any = None) -> BenchResult:
    """Run (or continue) the grid and write results.json, report.html and the PNGs.

    `model`, `tokenizer`: an already loaded HookedTransformer of `config.model` (else loaded)."""
    import torch

    from saesteer.bench.report import write_report
    from saesteer.config import config_to_dict
    from saesteer.outputs import Output
    from saesteer.sae.io import sae_checksum

    specs = _validated_specs(config)
    output = Output(config.out, "bench-steer")  # a file or a foreign folder: refused here
    store = BenchStore(config.out)
    store.check(config)
    started = time.time()
    with output:
        output.in_place()
        store.claim(config)
        if config.threads:
            torch.set_num_threads(config.threads)
        grid = _Grid(config, store, specs, (model, tokenizer) if model is not None else None)
        weights = weights_digest(grid.model)
        store.check_weights(weights)
        behaviours = {name: _behaviour_entry(grid, name) for name in config.behaviours}
        grid.bar.close()
        wall = time.time() - started
        report = {
            "config": config_to_dict(config),
            "weights_sha256": weights,
            "sae_sha256": sae_checksum(grid.sae) if grid.sae is not None else None,
            "behaviours": behaviours,
            "failures": grid.failures,
            "seconds": {**grid.seconds, "wall": wall},
            "rows": [
                {"behaviour": b, "method": m, "seed": int(seed), **row}
                for b, entry in behaviours.items()
                for m, method in entry["methods"].items()
                for seed, rows in method["cells"].items()
                for row in rows
            ],
        }
        results = store.write_json("results.json", report)
        html = write_report(report, store.root)
    return BenchResult(results, html, report, grid.failures)
