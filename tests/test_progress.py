"""Progress lines of studies and analyses (lskd_tf.progress), with a fake clock."""

import pytest

from lskd_tf.progress import Progress, format_duration


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0 s"), (59.4, "59 s"), (60, "1 min 00 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")],
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert format_duration(seconds) == text


def test_run_k_of_n_with_elapsed_and_eta_from_finished_runs():
    now = [100.0]
    lines = []
    progress = Progress("run", 5, done=1, clock=lambda: now[0], write=lines.append)
    progress.start("teacher-a")  # one run was finished before this process started
    now[0] += 60.0
    progress.finish()
    now[0] += 2.0  # between runs (claims, loading)
    progress.start("student-b")
    now[0] += 120.0
    progress.finish()
    progress.start("student-c", done=4)  # another process finished one meanwhile
    assert lines == [
        "run 2/5: teacher-a (elapsed 0 s, ETA after the first one finishes)",
        # left: 3 runs (this one and two after) x the mean of 60 s
        "run 3/5: student-b (elapsed 1 min 02 s, ETA 3 min 00 s (mean of 1 finished))",
        # left: 1 run x the mean of 60 s and 120 s
        "run 5/5: student-c (elapsed 3 min 02 s, ETA 1 min 30 s (mean of 2 finished))",
    ]


def test_eta_per_kind_counts_each_run_left_at_its_kinds_mean():
    """A study's teacher takes 5x a student: after the teacher alone, the students left
    are at the teacher's time (no student has finished); after a student, at its own."""
    now = [0.0]
    lines = []
    progress = Progress("run", 4, clock=lambda: now[0], write=lines.append)
    kinds = ["teacher r20", "student r8", "student r8", "teacher r20"]
    for step, (name, seconds) in enumerate(zip("abcd", (200.0, 40.0, 40.0, 200.0))):
        progress.start(name, kind=kinds[step], left=kinds[step:])
        now[0] += seconds
        progress.finish()
    assert lines[1].endswith("ETA 10 min 00 s (per kind: 1 teacher r20 finished))")  # 3 x 200
    assert lines[2].endswith("ETA 4 min 00 s (per kind: 1 teacher r20, 1 student r8 finished))")
    assert lines[3].endswith("ETA 3 min 20 s (per kind: 1 teacher r20, 2 student r8 finished))")
    assert progress.eta() == "ETA 0 s (mean of 4 finished)"
