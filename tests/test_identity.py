"""What a result's id covers (harness/identity.yaml): every config key is classified, the docs table is the data's,
and on the committed mini grid a performance or logging setting reruns nothing while an evaluation setting
re-evaluates without training."""
import json
import shutil

import pytest

from harness.core.config import load_config, to_dict
from harness.core.io import CONFIG_DIR, REPO_ROOT
from harness.identity import classification, leaves, markdown_table, rule
from harness.runner import _select, cell_dir, pending, plan

GROUPS = ("model", "trainer", "data", "variant")


def composed_leaves() -> dict[str, set[str]]:
    """section -> every leaf key of the configs it covers: `train` with each preset of each group, `eval`, and
    every configs/analyze/*.yaml."""
    out = {"train": set(), "eval": set(), "analyze": set()}
    for group in GROUPS:
        for preset in sorted((CONFIG_DIR / group).glob("*.yaml")):
            out["train"] |= set(leaves(to_dict(load_config("train", [f"{group}={preset.stem}"]))))
    out["eval"] = set(leaves(to_dict(load_config("eval"))))
    for a in sorted((CONFIG_DIR / "analyze").glob("*.yaml")):
        out["analyze"] |= set(leaves(to_dict(load_config(f"analyze/{a.stem}")))) - {"hydra"}
    return out


@pytest.fixture(scope="module")
def keys():
    return composed_leaves()


def test_every_config_key_is_classified(keys):
    for section, leaf_keys in keys.items():
        unclassified = sorted(k for k in leaf_keys if rule(section, k) is None)
        assert not unclassified, f"harness/identity.yaml: classify {section} keys {unclassified}"


def test_no_listed_key_is_stale(keys):
    for section, listed in classification().items():
        stale = [k for k in listed if not any(leaf == k or leaf.startswith(k + ".") for leaf in keys[section])]
        assert not stale, f"harness/identity.yaml lists {section} keys no config has: {stale}"


def test_docs_table_is_the_data():
    doc = (REPO_ROOT / "docs" / "runner.md").read_text()
    assert markdown_table() in doc, "docs/runner.md's table is not harness/identity.yaml's: python -m harness.identity"


def mini(*overrides):
    return plan(load_config("run", ["grid=mini", *overrides]).grid)


def test_ids_follow_what_changes_results():
    ref = mini()
    ids = lambda cells: [c.cell_id for c in cells]
    evals = lambda cells: {c.eval_id for c in cells}
    # performance and logging: no id changes
    same = mini("grid.eval.overrides=['k=16','hf.batch_size=7']")
    assert ids(same) == ids(ref) and evals(same) == evals(ref)
    logged = mini("grid.train_overrides=['trainer.save_weights_steps=20','trainer.report_to=tensorboard']")
    assert ids(logged) == ids(ref)
    # an evaluation setting: same cells, new evaluation and analysis ids (the analyses read the evaluation)
    k8 = mini("grid.eval.overrides=['k=8','hf.batch_size=400']")
    assert ids(k8) == ids(ref) and not evals(k8) & evals(ref)
    assert [c.analysis_ids for c in k8 if c.analyses] != [c.analysis_ids for c in ref if c.analyses]
    # a weight-changing setting: new training cells, the base cell (model only) stays
    lr = mini("grid.train_overrides=['trainer.save_weights_steps=20','trainer.learning_rate=1e-4']")
    assert [a == b for a, b in zip(ids(lr), ids(ref))] == [c.eval_only for c in ref]
    # an analysis setting: only that analysis's id
    an = mini("grid.analyses.1.overrides=['samples={eval_dir}/samples_mini_id.jsonl','n_problems=40','k=4']")
    changed = {a for c, r in zip(an, ref) for a, b in zip(c.analysis_ids, r.analysis_ids) if a != b}
    assert changed and all(a.startswith("overlap-") for a in changed)


def test_committed_mini_grid_is_complete_and_stays_so():
    """A fresh clone finds every cell complete; performance and logging settings leave it complete; a new
    evaluation setting marks evaluations (never new training cells)."""
    def todo(*ov):
        return _select(load_config("run", ["grid=mini", "results_dir=results", *ov]))[1]

    assert todo() == []
    assert todo("grid.eval.overrides=['k=16','hf.batch_size=8']") == []
    assert todo("grid.train_overrides=['trainer.save_weights_steps=20','trainer.report_to=tensorboard']") == []
    k8 = todo("grid.eval.overrides=['k=8','hf.batch_size=400']")
    assert len(k8) == len(mini())  # every cell of the grid (base + variants x seeds)
    for c in k8:
        cdir = cell_dir(REPO_ROOT / "results", c)
        assert (cdir / "status.json").exists(), f"{c.cell_id}: a new cell, not a new evaluation"
        assert "eval" in pending(c, cdir)


def test_migration_round_trip(tmp_path):
    """An old-layout cell (eval/step-N/, flat analysis/, old id) moves to the planned cell id and folders."""
    from harness.migrate import migrate, old_cell_id

    cells = {c.variant + str(c.seed): c for c in mini()}
    runs = tmp_path / "runs" / "mini"
    for key in ("base0", "full0", "top201"):
        c = cells[key]
        src = REPO_ROOT / "results" / "runs" / "mini" / c.cell_id
        old = runs / old_cell_id(c)
        shutil.copytree(src, old)
        for label in c.eval_labels:  # back to the old layout
            (old / "eval" / c.eval_id / label).rename(old / "eval" / label)
        shutil.rmtree(old / "eval" / c.eval_id)
        for aid in c.analysis_ids:
            for f in (old / "analysis" / aid).iterdir():
                f.rename(old / "analysis" / f.name)
            (old / "analysis" / aid).rmdir()
        for prov in (old / "analysis").glob("*.provenance.json"):  # the paths an old-layout analysis recorded
            text = prov.read_text().replace(f"/eval/{c.eval_id}/", "/eval/")
            for aid in c.analysis_ids:
                text = text.replace(f"/analysis/{aid}", "/analysis")
            prov.write_text(text)
        status = json.loads((old / "status.json").read_text())
        for k in ("eval_id", "analyses", "migrated_from"):
            status.pop(k, None)
        (old / "status.json").write_text(json.dumps(status))
    notes = migrate(load_config("run", ["grid=mini"]).grid, tmp_path)
    assert not [n for n in notes if "stays" in n or "not moved" in n], notes
    for key in ("base0", "full0", "top201"):
        c = cells[key]
        src, dst = REPO_ROOT / "results" / "runs" / "mini" / c.cell_id, runs / c.cell_id
        assert sorted(p.relative_to(dst) for p in dst.rglob("*")) == sorted(p.relative_to(src) for p in src.rglob("*"))
        assert pending(c, dst) == ()
    # the moved cells are done; the others of the grid were never there
    todo = _select(load_config("run", ["grid=mini", f"results_dir={tmp_path}"]))[1]
    assert {c.variant + str(c.seed) for c in todo} == set(cells) - {"base0", "full0", "top201"}
