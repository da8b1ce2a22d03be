"""The thread rule: free cores, explicit choices, the OpenMP wait policy, the load meter."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from adtr_core.runs import threads
from adtr_core.runs.threads import ThreadRule, explicit_threads, free_threads


def test_rule_takes_the_cores_others_leave_free():
    assert free_threads(None, 2) == 2  # load unknown: every core
    assert free_threads(0.1, 2) == 2  # idle
    assert free_threads(1.0, 2) == 1  # one competing process on two cores
    assert free_threads(0.6, 4) == 3
    assert free_threads(7.5, 2) == 1  # never fewer than one thread


def test_explicit_choice_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("ADTR_THREADS", "3")
    assert explicit_threads(None) == 3
    assert explicit_threads(1) == 1
    monkeypatch.setenv("ADTR_THREADS", "auto")
    assert explicit_threads(None) is None and explicit_threads(0) is None
    monkeypatch.setenv("ADTR_THREADS", "many")
    with pytest.raises(ValueError, match="ADTR_THREADS"):
        explicit_threads(None)


def test_notebook_parameter_sets_the_count_of_later_runs(monkeypatch):
    monkeypatch.delenv("ADTR_THREADS", raising=False)
    assert threads.set_default_threads(1) == 1 and explicit_threads(None) == 1
    assert threads.set_default_threads(None) is None and explicit_threads(None) is None
    threads.set_default_threads(2)
    assert threads.set_default_threads("auto") is None and "ADTR_THREADS" not in threads.os.environ


def test_fixed_count_is_set_and_kept(monkeypatch):
    monkeypatch.delenv("ADTR_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        rule = ThreadRule(1)
        assert rule.apply() == 1 and torch.get_num_threads() == 1
        assert rule.update() == 1
    finally:
        torch.set_num_threads(before)


def test_automatic_rule_follows_the_load(monkeypatch):
    monkeypatch.delenv("ADTR_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads, "sample_busy_cores", lambda interval_s=0.25: 0.0)
    readings = iter([1.2, 0.0])

    class FakeMeter:
        def busy_cores(self):
            return next(readings)

    monkeypatch.setattr(threads, "LoadMeter", FakeMeter)
    before = torch.get_num_threads()
    try:
        rule = ThreadRule()
        assert rule.apply() == 2  # idle at the start
        assert rule.update() == 1 and torch.get_num_threads() == 1  # a competitor came
        assert rule.update() == 2  # and went
    finally:
        torch.set_num_threads(before)


def test_fitting_takes_the_rule_under_a_fixed_count_and_restores_it(monkeypatch):
    """A peer's fit (result independent of the thread count) ignores ADTR_THREADS, not ``threads``."""
    monkeypatch.setenv("ADTR_THREADS", "1")
    monkeypatch.setattr(threads, "cores", lambda: 2)
    loads = iter([0.0, 1.0, 0.0])
    monkeypatch.setattr(threads, "sample_busy_cores", lambda interval_s=0.25: next(loads))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with threads.fit_threads() as n:
            assert n == 2 and torch.get_num_threads() == 2  # idle machine: both cores
        assert torch.get_num_threads() == 1  # restored
        with threads.fit_threads() as n:
            assert n == 1  # a competitor holds a core
        with threads.fit_threads(2) as n:
            assert n == 2  # an explicit count wins
        with threads.fit_threads("auto") as n:
            assert n == 2  # "auto" is the rule, not ADTR_THREADS
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_load_meter_sees_a_busy_process_and_not_itself():
    meter = threads.LoadMeter()
    end = time.monotonic() + 0.4
    while time.monotonic() < end:  # this process is busy: that is not "others"
        pass
    own_only = meter.busy_cores()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        meter.busy_cores()
        time.sleep(0.6)
        loaded = meter.busy_cores()
    finally:
        spinner.kill()
        spinner.wait()
    assert own_only is not None and loaded is not None
    assert loaded > own_only + 0.5  # one more core busy, give or take other work


def test_a_trained_run_is_identified_by_a_fixed_count(monkeypatch):
    """No count given: ADTR_THREADS, else every core; "auto" asks for the rule; the count
    resolved is stored in the config, and so names the results folder."""
    from adtr_core.runs.config import ExperimentConfig
    from adtr_core.runs.experiment import resolve_config

    monkeypatch.delenv("ADTR_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    assert threads.run_threads() == 2 and threads.run_threads(default=1) == 1
    assert threads.run_threads(3) == 3 and threads.run_threads("auto") == "auto"
    monkeypatch.setenv("ADTR_THREADS", "1")
    assert threads.run_threads() == 1 and threads.run_threads(3) == 3
    assert threads.run_threads("auto") == "auto"  # the explicit rule wins over the variable
    monkeypatch.setenv("ADTR_THREADS", "auto")
    assert threads.run_threads() == "auto"
    monkeypatch.setenv("ADTR_THREADS", "2")
    assert ThreadRule("auto").fixed is None and ThreadRule(None).fixed == 2

    cfg = ExperimentConfig(data="demo", category="grass")
    one, two = resolve_config(cfg, threads=1), resolve_config(cfg)
    assert (one.threads, two.threads) == (1, 2) and one.run_name() != two.run_name()
    assert resolve_config(cfg, default_threads=1).threads == 2  # ADTR_THREADS first
    monkeypatch.delenv("ADTR_THREADS")
    assert resolve_config(cfg, default_threads=1).threads == 1  # a Ray task's one CPU
    peer = resolve_config(ExperimentConfig(data="demo", category="grass", model="patchcore"))
    assert peer.threads is None  # a fitted peer's scores do not depend on the count


def test_the_command_line_takes_a_count_or_auto(capsys):
    from adtr_core.cli import build_parser

    assert build_parser().parse_args(["train", "--threads", "auto"]).threads == "auto"
    assert build_parser().parse_args(["train", "--threads", "2"]).threads == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--threads", "0"])
    assert "threads >= 1 or auto" in capsys.readouterr().err
