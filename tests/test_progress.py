"""Progress bars: tqdm's own in a terminal, a few whole lines in a log."""

from __future__ import annotations

import io

import pytest
from tqdm.std import tqdm

from adtr_core.runs import progress
from adtr_core.runs.progress import LogProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(LogProgress, "clock", staticmethod(fake))
    return fake


def test_a_log_gets_a_line_per_tenth_of_the_work_and_no_carriage_returns(clock):
    log = io.StringIO()
    for _ in progress_bar(range(500), desc="coreset", file=log):
        clock.now += 0.001
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 10, lines  # 50, 100, ..., 500: the last one is the final line
    assert lines[-1].startswith("coreset: 100%") and "500/500" in lines[-1]
    assert max(map(len, lines)) < 200


def test_a_log_gets_a_line_every_ten_seconds_of_slow_work(clock):
    log = io.StringIO()
    bar = progress_bar(total=1000, desc="train", file=log)
    for _ in range(60):  # 60 steps of 1 s: 6 % of the total, 6 ten-second marks
        clock.now += 1.0
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 6, lines  # at 10, 20, ..., 60 s; the last is also the final count
    assert "60/1000" in lines[-1]


def test_without_a_total_only_time_counts_and_the_final_line_comes_once(clock):
    log = io.StringIO()
    bar = progress_bar(desc="batches", file=log)
    for _ in range(25):
        clock.now += 1.0
        bar.update()
    bar.close()
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 3, lines  # 10 s, 20 s, final (25)
    assert lines[-1].startswith("batches: 25")


def test_postfix_and_write_follow_the_same_rule(clock):
    log = io.StringIO()
    bar = progress_bar(range(8), desc="train", unit="epoch", file=log)
    for epoch in bar:
        bar.set_postfix(loss=f"{1 / (epoch + 1):.3g}")  # refreshes: throttled, not a line each
        tqdm.write("a message", file=log)
    lines = log.getvalue().splitlines()
    progress_lines = [ln for ln in lines if ln.startswith("train")]
    assert len(progress_lines) == 8  # one per epoch: each is 12.5 % of the work
    assert lines.count("a message") == 8
    assert "loss=0.125" in progress_lines[-1]


def test_a_short_bar_still_ends_with_one_line(clock):
    log = io.StringIO()
    with progress_bar(total=3, desc="tiny", file=log) as bar:
        bar.update(0)
    assert log.getvalue().splitlines() == [log.getvalue().splitlines()[0]]
    assert log.getvalue().startswith("tiny:   0%")


def test_a_terminal_gets_tqdms_own_bar():
    term = Terminal()
    bar = progress_bar(range(50), desc="features", file=term, mininterval=0)
    assert type(bar) is tqdm
    for _ in bar:
        pass
    assert term.getvalue().count("\r") > 10  # redrawn in place, as tqdm does


def test_disabled_bars_write_nothing():
    log = io.StringIO()
    for _ in progress_bar(range(10), file=log, disable=True):
        pass
    assert log.getvalue() == ""


def test_stderr_by_default(capsys):
    for _ in progress_bar(range(3), desc="default"):
        pass
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "\r" not in err  # captured stderr is no terminal
    assert progress.is_terminal(object()) is False


def test_patchcores_coreset_bar_writes_lines_in_a_log(capsys):
    """anomalib's coreset selection: hundreds of bar updates, at most 11 lines.

    (anomalib is imported by the peers' tests anyway; this one adds no import time there.)
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("anomalib")
    from anomalib.models.components import KCenterGreedy

    from adtr_core.runs.peers import _coreset_bar_as_ours

    embedding = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))
    KCenterGreedy(embedding, sampling_ratio=0.3).sample_coreset()
    unthrottled = capsys.readouterr().err
    assert unthrottled.count("\r") > 1  # anomalib's own bar, redrawn in place on one line
    with _coreset_bar_as_ours():
        KCenterGreedy(embedding, sampling_ratio=0.3).sample_coreset()
    err = capsys.readouterr().err
    assert "\r" not in err and 1 <= err.count("\n") <= 11, err
    assert "Selecting Coreset Indices.: 100%" in err.splitlines()[-1]
