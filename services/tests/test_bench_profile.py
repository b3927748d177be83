"""`taxi bench --profile`: py-spy's raw output read and summed up, without I/O; then py-spy
itself, run on a small Python process."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taxi_services.bench import pyspy
from taxi_services.bench.profile import (
    Frame,
    Profile,
    parse_collapsed,
    parse_frame,
    self_samples,
    summary_lines,
    total_samples,
    wrappers,
)

# The head of the predictor's stack, shortened from `py-spy record -f raw --function`.
MAIN = (
    "<module> (taxi-predictor:1);Command.__call__ (click/core.py:1651);"
    "main (taxi_services/predictor.py:174);"
    "TransactionalProcessor.run (taxi_kafka/_processor.py:221);"
    "TransactionalProcessor._process_batch (taxi_kafka/_processor.py:158)"
)
PREDICT = f"{MAIN};PredictTransform.__call__ (taxi_services/predictor.py:113)"
COMMIT = (
    "Thread._bootstrap (threading.py:988);Thread.run (threading.py:971);"
    "BackgroundCall._run (taxi_kafka/_deadline.py:45);"
    "TransactionalProducer.commit (taxi_kafka/_transactions.py:86)"
)
RAW = f"""\
{PREDICT};decode_trip_starts (taxi_events/columns.py:84) 140
{PREDICT};_predict (taxi_services/predictor.py:167);Pipeline.predict (sklearn/pipeline.py:746) 100
{MAIN};KafkaConsumer.consume (taxi_kafka/consumer.py:142) 128
{COMMIT} 98
{COMMIT};KafkaProducer.produce_all (taxi_kafka/producer.py:131) 57
{PREDICT};decode_trip_starts (taxi_events/columns.py:84) 10
 1
"""


def test_a_frame_is_its_function_and_package_relative_place():
    assert parse_frame("Pipeline.predict (sklearn/pipeline.py:746)") == Frame(
        "Pipeline.predict", "sklearn/pipeline.py:746"
    )
    assert parse_frame("inner.<locals>.<genexpr> (toy.py:3)") == Frame(
        "inner.<locals>.<genexpr>", "toy.py:3"
    )
    # Absolute paths (--full-filenames, or a file py-spy did not shorten) lose their root.
    site = "/app/.venv/lib/python3.11/site-packages/confluent_kafka/serializing_producer.py"
    assert parse_frame(f"SerializingProducer.produce ({site}:150)").location == (
        "confluent_kafka/serializing_producer.py:150"
    )
    assert parse_frame(
        "main (/work/main/services/src/taxi_services/predictor.py:174)"
    ).location == ("taxi_services/predictor.py:174")
    assert parse_frame("(unknown)") == Frame("(unknown)", "")


def test_the_same_stack_on_two_lines_is_added_up_and_an_unreadable_sample_kept():
    stacks = parse_collapsed(RAW)
    assert sum(stacks.values()) == 534
    decode = tuple(
        parse_frame(f)
        for f in f"{PREDICT};decode_trip_starts (taxi_events/columns.py:84)".split(";")
    )
    assert stacks[decode] == 150
    assert stacks[()] == 1
    assert len(stacks) == 6


def test_self_time_is_the_leaf_and_total_time_counts_a_sample_once_per_frame():
    stacks = parse_collapsed(RAW)
    own = self_samples(stacks)
    assert own[Frame("decode_trip_starts", "taxi_events/columns.py:84")] == 150
    assert own[Frame("TransactionalProducer.commit", "taxi_kafka/_transactions.py:86")] == 98
    assert sum(own.values()) == 533  # the unreadable sample has no frame
    total = total_samples(stacks)
    assert total[Frame("TransactionalProducer.commit", "taxi_kafka/_transactions.py:86")] == 155
    assert total[Frame("main", "taxi_services/predictor.py:174")] == 378
    assert total[Frame("PredictTransform.__call__", "taxi_services/predictor.py:113")] == 250


def test_a_wrapper_is_a_frame_whose_samples_are_all_in_one_below_it():
    found = wrappers(parse_collapsed(RAW))
    assert {f.function for f in found} == {
        "<module>",
        "Command.__call__",
        "main",
        "TransactionalProcessor.run",
        "_predict",  # always calls Pipeline.predict, which has its every sample
        "Thread._bootstrap",
        "Thread.run",
        "BackgroundCall._run",
    }


def test_recursion_counts_once_in_total_time():
    stacks = parse_collapsed("a (m.py:1);b (m.py:5);a (m.py:1);b (m.py:5) 4\na (m.py:1) 1\n")
    assert total_samples(stacks)[Frame("a", "m.py:1")] == 5
    assert total_samples(stacks)[Frame("b", "m.py:5")] == 4
    assert wrappers(stacks) == set()  # a has samples of its own


def test_a_line_that_is_not_a_stack_is_an_error():
    with pytest.raises(ValueError, match="line 2"):
        parse_collapsed("a (m.py:1) 3\npy-spy> Sampling process 100 times a second.\n")


def test_the_report_ranks_by_self_and_total_time_as_shares_of_every_sample():
    settings = {"tool": "py-spy", "rate": 100}
    # Two recordings (two drains) make one profile.
    profile = Profile.of([RAW, f"{COMMIT} 2\n"], settings).to_json()
    assert profile["tool"] == "py-spy"
    assert profile["samples"] == 536
    assert profile["unreadable_samples"] == 1
    top = profile["top_self"]
    assert [(e["function"], e["samples"]) for e in top] == [
        ("decode_trip_starts", 150),
        ("KafkaConsumer.consume", 128),
        ("Pipeline.predict", 100),  # a tie: in order of name
        ("TransactionalProducer.commit", 100),
        ("KafkaProducer.produce_all", 57),
    ]
    assert top[0] == {
        "function": "decode_trip_starts",
        "location": "taxi_events/columns.py:84",
        "samples": 150,
        "share": round(150 / 536, 4),
    }
    # The main loop's layers and the commit thread's all hold the same samples: the deepest
    # of each chain stands for them.
    assert [(e["function"], e["samples"]) for e in profile["top_total"]] == [
        ("TransactionalProcessor._process_batch", 378),
        ("PredictTransform.__call__", 250),
        ("TransactionalProducer.commit", 157),
        ("decode_trip_starts", 150),
        ("KafkaConsumer.consume", 128),
        ("Pipeline.predict", 100),
        ("KafkaProducer.produce_all", 57),
    ]
    assert profile["top_total"][0]["share"] == round(378 / 536, 4)


def test_no_samples_is_an_empty_ranking():
    profile = Profile.of([""], {}).to_json()
    assert profile["samples"] == 0
    assert profile["top_self"] == profile["top_total"] == []


def test_summary_lines_show_the_top_entries_by_self_time():
    profile = Profile.of([RAW], {}).to_json()
    lines = summary_lines(profile, 2)
    assert lines == [
        " 28.1%  decode_trip_starts (taxi_events/columns.py:84)",
        " 24.0%  KafkaConsumer.consume (taxi_kafka/consumer.py:142)",
    ]


# -- py-spy itself (pyspy.py) ---------------------------------------------------------------

BUSY = textwrap.dedent(
    """
    import sys

    def square_all(n):
        return sum(i * i for i in range(n))

    def work():
        while True:
            square_all(10_000)

    print("ready", flush=True)
    work()
    """
)


@pytest.fixture
def busy_python(tmp_path: Path):
    script = tmp_path / "busy.py"
    script.write_text(BUSY)
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"  # its functions defined and running
    yield process
    process.kill()
    process.wait()


def test_a_recording_of_a_busy_process_finds_its_functions(busy_python, tmp_path):
    spy = pyspy.executable()
    pyspy.check_attach(spy, busy_python.pid)
    recording = pyspy.Recording(spy, busy_python.pid, tmp_path / "profile.txt")
    subprocess.run([sys.executable, "-c", "import time; time.sleep(1)"], check=True)
    profile = Profile.of([recording.stop()], pyspy.settings(pyspy.RATE)).to_json()
    assert profile["samples"] >= 20  # 100 a second, for a second
    top = profile["top_self"][0]
    assert top["function"] in ("square_all", "square_all.<locals>.<genexpr>")
    assert top["location"].startswith("busy.py:")
    # The loop and its generator share the samples between them, as evenly as 50/50 at times.
    busy = sum(e["share"] for e in profile["top_self"] if e["location"].startswith("busy.py:"))
    assert busy > 0.5


def test_py_spy_cannot_attach_to_what_is_not_python(tmp_path):
    with subprocess.Popen(["sleep", "30"]) as sleeping:
        try:
            with pytest.raises(pyspy.PySpyError, match=f"cannot attach to pid {sleeping.pid}"):
                pyspy.check_attach(pyspy.executable(), sleeping.pid)
        finally:
            sleeping.kill()


def test_profile_needs_the_predictor_part(taxi):
    code, _, err = taxi("bench", "--only", "passthrough", "--profile")
    assert code == 2
    assert "--profile samples the predictor part" in err
