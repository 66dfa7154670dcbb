"""Catalog: sequences, options, the OptionsParser and loading an AWEPIPE tree."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dpu_slurm.catalog import Catalog, Option, Task
from dpu_slurm.errors import CatalogError, OptionError, SequenceError
from tests.conftest import EXAMPLE, Session

# The HOW-TO's answer for HotPixels, which the example pipeline declares the same way.
SEED_HOTPIXELS = [["i", "c", "d", "tpl", "p", "C",
                   "instrument", "chip", "date", "template", "pars", "commit"]]
SEED_SHOW = ['"i" or "instrument" (default: )',
             '"c" or "chip" (default: )',
             '"d" or "date" (default: )',
             '"tpl" or "template" (default: None)',
             '"p" or "pars" (default: {})',
             '"C" or "commit" (default: False)']


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(EXAMPLE)


def write_tree(root: Path, body: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dpu_tasks.py").write_text(
        "from dpu_slurm.catalog import Option, Task\n" + textwrap.dedent(body), encoding="utf-8")
    return root


# -- identifiers ---------------------------------------------------------------------------------

def test_identifiers_hold_the_issue_tasks_and_declared_chains(catalog: Catalog) -> None:
    idents = catalog.identifiers()
    for name in ("Null", "ReadNoise", "Bias", "HotPixels", "DomeFlat", "Reduce", "Null>Null",
                 "Bias>HotPixels"):
        assert name in idents
    assert len(idents) == len(set(idents))


def test_chain_runs_its_tasks_in_declared_order(catalog: Catalog) -> None:
    seq = catalog.sequence("Bias>HotPixels")
    assert [t.name for t in seq.tasks] == ["Bias", "HotPixels"]
    assert catalog.sequence(" Bias > HotPixels ").identifier == "Bias>HotPixels"


def test_undeclared_chain_is_unknown(catalog: Catalog) -> None:
    with pytest.raises(SequenceError):
        catalog.sequence("HotPixels>Bias")


def test_get_sequence_options_has_the_seed_shape(session: Session) -> None:
    assert session.dpu.get_sequence_options("HotPixels") == SEED_HOTPIXELS


def test_chain_options_are_the_union_without_duplicates(catalog: Catalog) -> None:
    opts = catalog.sequence("Null>Null").options
    assert [o.long for o in opts] == [o.long for o in catalog.sequence("Null").options]
    assert len({o.short for o in opts}) == len(opts)


def test_show_sequence_options_prints_the_seed_lines(session: Session) -> None:
    session.dpu.show_sequence_options("HotPixels")
    # to the letter: no [user] HH:MM:SS prefix, the help text only with verbose=True
    assert session.printed() == ["Recognized options for the OptionsParser are:", *SEED_SHOW]


def test_show_sequence_options_verbose_puts_each_help_text_on_its_own_line(session: Session) -> None:
    session.dpu.show_sequence_options("HotPixels", verbose=True)
    messages = session.printed()
    assert [m for m in messages if m.startswith('"')] == SEED_SHOW
    at = messages.index(SEED_SHOW[0])
    assert messages[at + 1] == "    instrument name: WFI, OMEGACAM"
    assert messages[messages.index(SEED_SHOW[-1]) + 1] == \
        "    commit the results so get_job_result returns them"


def test_show_sequence_identifiers_lists_every_identifier(session: Session) -> None:
    session.dpu.show_sequence_identifiers()
    text = session.out.getvalue()
    for ident in session.dpu.get_sequence_identifiers():
        assert re.search(rf"^{re.escape(ident)} ", text, re.M)


# -- the OptionsParser ---------------------------------------------------------------------------

def long_name(catalog: Catalog, seq: str, short: str) -> str:
    return next(o.long for o in catalog.sequence(seq).options if o.short == short)


def test_short_and_long_names_mix_and_defaults_fill_in(catalog: Catalog) -> None:
    values = catalog.parse("ReadNoise", {"i": "WFI", "date": "2000-04-28", "C": 1})
    assert values == {"instrument": "WFI", "chip": "", "date": "2000-04-28", "template": None,
                      "pars": {}, "commit": True}


def test_same_option_by_short_and_long_name_is_an_error(catalog: Catalog) -> None:
    with pytest.raises(OptionError, match=r"'instrument' given twice.*'i'.*'instrument'"):
        catalog.parse("ReadNoise", {"i": "WFI", "instrument": "WFI"})


@pytest.mark.parametrize(("key", "given", "expected"), [
    ("C", 1, True), ("C", 0, False), ("C", "true", True), ("C", "False", False), ("C", "yes", True),
    ("n", "3", 3), ("n", 4, 4),
    ("s", "0.5", 0.5), ("s", 2, 2.0),
    ("m", 42, "42"),
])
def test_values_are_coerced_to_the_option_type(catalog: Catalog, key: str, given: object,
                                               expected: object) -> None:
    value = catalog.parse("Null", {key: given})[long_name(catalog, "Null", key)]
    assert value == expected
    assert type(value) is type(expected)


def test_none_means_the_default(catalog: Catalog) -> None:
    assert catalog.parse("Null", {"s": None, "n": None})["sleep"] == 0.0
    assert catalog.parse("ReadNoise", {"i": "WFI", "tpl": None})["template"] is None
    assert catalog.estimate("Null", catalog.parse("Null", {"s": None})) == 5.0


def test_dict_option_from_a_string_literal(catalog: Catalog) -> None:
    values = catalog.parse("ReadNoise", {"i": "WFI", "p": "{'max_iter': 3, 'threshold': 4.5}"})
    assert values["pars"] == {"max_iter": 3, "threshold": 4.5}


@pytest.mark.parametrize(("key", "given", "kind"), [
    ("n", "three", "int"), ("n", True, "int"), ("n", 1.5, "int"),
    ("s", "slow", "float"), ("s", [1], "float"),
    ("C", "maybe", "bool"), ("C", 2, "bool"),
    ("m", ["a"], "str"),
])
def test_wrong_type_is_an_option_error_naming_option_type_and_value(
        catalog: Catalog, key: str, given: object, kind: str) -> None:
    with pytest.raises(OptionError) as err:
        catalog.parse("Null", {key: given})
    text = str(err.value)
    assert repr(key) in text and repr(long_name(catalog, "Null", key)) in text
    assert kind in text
    assert repr(given)[:20] in text


def test_type_error_reads_as_english(catalog: Catalog) -> None:
    with pytest.raises(OptionError, match=r"option 'n'/'count' takes an int; got str 'three'$"):
        catalog.parse("Null", {"n": "three"})


@pytest.mark.parametrize("given", ["[1, 2]", "{'a': ", "__import__('os').system('true')", 7])
def test_dict_option_rejects_non_dicts_without_evaluating_code(catalog: Catalog, given: object) -> None:
    with pytest.raises(OptionError, match="dict"):
        catalog.parse("ReadNoise", {"i": "WFI", "p": given})


def test_unknown_sequence_suggests_close_names(catalog: Catalog) -> None:
    with pytest.raises(SequenceError, match=r"unknown sequence 'ReadNoice'.*did you mean 'ReadNoise'"):
        catalog.sequence("ReadNoice")


def test_unknown_option_lists_the_valid_ones(catalog: Catalog) -> None:
    with pytest.raises(OptionError) as err:
        catalog.parse("ReadNoise", {"instrumnet": "WFI"})
    text = str(err.value)
    assert "'instrumnet'" in text and "did you mean 'instrument'" in text
    for pair in ("i/instrument", "c/chip", "d/date", "tpl/template", "p/pars", "C/commit"):
        assert pair in text


# -- loading an AWEPIPE tree ---------------------------------------------------------------------

def test_conflicting_option_declarations_in_a_chain_are_rejected_at_load(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "pipe", """
        A = Task("A", run="m:a", options=(Option("i", "instrument", str, ""),))
        B = Task("B", run="m:b", options=(Option("i", "instrument", int, 0),))
        TASKS = [A, B]
        SEQUENCES = ["A>B"]
    """)
    with pytest.raises(CatalogError, match=r"A>B.*'i'/'instrument'.*task 'B'.*conflicts"):
        Catalog.load(tree)


def test_short_name_reused_for_another_option_in_a_chain_is_rejected(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "pipe", """
        TASKS = [Task("A", run="m:a", options=(Option("i", "instrument"),)),
                 Task("B", run="m:b", options=(Option("i", "input"),))]
        SEQUENCES = ["A>B"]
    """)
    with pytest.raises(CatalogError, match="conflicts"):
        Catalog.load(tree)


def test_same_declaration_in_two_tasks_of_a_chain_is_fine(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "pipe", """
        I = Option("i", "instrument")
        TASKS = [Task("A", run="m:a", options=(I, Option("x", "extra", int, 1))),
                 Task("B", run="m:b", options=(I,))]
        SEQUENCES = ["A>B"]
    """)
    cat = Catalog.load(tree)
    assert cat.identifiers() == ["A", "B", "A>B"]
    assert [o.long for o in cat.sequence("A>B").options] == ["instrument", "extra"]


def test_missing_awepipe_path_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not a directory"):
        Catalog.load(tmp_path / "nowhere")


def test_tree_without_declarations_is_a_catalog_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match=r"holds no dpu_tasks\.py"):
        Catalog.load(tmp_path / "empty")


def test_declarations_that_raise_are_a_catalog_error_naming_the_file(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "pipe", "raise RuntimeError('boom')\n")
    with pytest.raises(CatalogError, match=r"dpu_tasks.py.*RuntimeError: boom"):
        Catalog.load(tree)


def test_declarations_without_tasks_are_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="must define TASKS"):
        Catalog.load(write_tree(tmp_path / "pipe", "X = 1\n"))


def test_chain_of_an_unknown_task_is_a_catalog_error(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "pipe", """
        TASKS = [Task("A", run="m:a")]
        SEQUENCES = ["A>Nope"]
    """)
    with pytest.raises(CatalogError, match=r"unknown task.*Nope"):
        Catalog.load(tree)


def test_task_run_must_name_module_and_function() -> None:
    with pytest.raises(CatalogError, match="module:function"):
        Catalog([Task("A", run="just_a_module")])


def test_option_type_must_be_a_supported_one() -> None:
    with pytest.raises(CatalogError, match="type must be one of"):
        Option("z", "zeta", type=bytes)


def test_task_code_is_not_imported_when_the_catalog_loads(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "pipe", 'TASKS = [Task("A", run="exploding_module_xyz:run")]\n')
    (tree / "exploding_module_xyz.py").write_text("raise SystemExit('imported!')\n")
    assert Catalog.load(tree).identifiers() == ["A"]


def test_awepipe_env_pointing_nowhere_is_a_catalog_error(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dpu_slurm.processor import Processor
    monkeypatch.setenv("AWEPIPE", str(tmp_path / "missing"))
    with pytest.raises(CatalogError, match="AWEPIPE"):
        Processor("local", session_log=False)


@pytest.mark.parametrize("kwargs", [{"s": float("inf")}, {"s": 1e308}, {"s": "nan"}, {"dpu_time": 1e308},
                                    {"dpu_mem": 1e18}, {"dpu_mem": 0.5}, {"send_code": "no"},
                                    {"m": "nul \x00 byte"}, {"p": "[" * 50 + "]" * 50}])
def test_out_of_bounds_values_at_the_prompt_are_option_errors(session: Session, kwargs: Any) -> None:
    sequence = "ReadNoise" if "p" in kwargs else "Null"
    with pytest.raises(OptionError):
        session.dpu.run(sequence, i="WFI", **kwargs) if "p" in kwargs else session.dpu.run(sequence, **kwargs)
    assert session.dpu.get_jobids() == []


def test_nested_option_values_are_bounded_in_depth(catalog: Catalog) -> None:
    deep = {"a": {"b": {"c": {"d": {"e": 1}}}}}
    with pytest.raises(OptionError, match="nested more than 4 deep"):
        catalog.parse("ReadNoise", {"i": "WFI", "p": deep})
    assert catalog.parse("ReadNoise", {"i": "WFI", "p": {"a": {"b": {"c": 1}}}})["pars"]["a"]["b"]["c"] == 1


def test_option_text_is_bounded_per_value_and_per_run(catalog: Catalog) -> None:
    assert len(catalog.parse("Null", {"m": "x" * 32768})["message"]) == 32768
    with pytest.raises(OptionError, match="text of 32769 characters; at most 32768"):
        catalog.parse("Null", {"m": "x" * 32769})
    pars = {f"k{i}": "y" * 20000 for i in range(3)}
    with pytest.raises(OptionError, match="more than 65536 characters of text in all"):
        catalog.parse("ReadNoise", {"i": "WFI", "p": pars, "d": "z" * 10000})
