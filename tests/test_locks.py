"""Slide locks: exclusive, stale ones taken over, and two real `wsimito detect` runs on one slide at once."""

import csv
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path


from wsimito.locks import Holder, SlideLock

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "wsimito/data/CMU-1-Small-Region.svs"


def plant(path, holder, age_s=0.0):
    """A lock file as another process would have left it."""
    path.write_text(json.dumps(asdict(holder)))
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))


def test_one_holder_at_a_time(tmp_path):
    first, second = SlideLock(tmp_path / ".a.lock"), SlideLock(tmp_path / ".a.lock")
    assert first.acquire(block=False)
    assert not second.acquire(block=False)
    assert second.holder().pid == os.getpid() and second.holder().host == socket.gethostname()
    first.release()
    assert not (tmp_path / ".a.lock").exists()
    with second:
        assert (tmp_path / ".a.lock").exists()
    assert not (tmp_path / ".a.lock").exists() and not list(tmp_path.iterdir())


def test_a_dead_process_lock_is_taken_over_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    plant(tmp_path / ".a.lock", replace(Holder.me(), pid=dead.pid, started="1"))
    lock = SlideLock(tmp_path / ".a.lock")
    assert lock.acquire(block=False) and lock.holder().pid == os.getpid()
    lock.release()


def test_a_reused_pid_does_not_keep_a_lock(tmp_path):
    plant(tmp_path / ".a.lock", replace(Holder.me(), started="12345"))  # our pid, another process's start time
    assert SlideLock(tmp_path / ".a.lock").acquire(block=False)


def test_another_hosts_lock_is_stale_only_without_heartbeat(tmp_path):
    other = replace(Holder.me(), host="node-17", pid=1)
    plant(tmp_path / ".a.lock", other)
    lock = SlideLock(tmp_path / ".a.lock", stale_after_s=60)
    assert not lock.acquire(block=False)
    plant(tmp_path / ".a.lock", other, age_s=120)
    assert lock.acquire(block=False)
    lock.release()
    (tmp_path / ".b.lock").write_text("")  # unreadable content: judged by age as well
    assert not SlideLock(tmp_path / ".b.lock", stale_after_s=60).acquire(block=False)


def test_breaking_a_stale_lock_never_removes_a_fresh_one(tmp_path):
    path = tmp_path / ".a.lock"
    fresh = SlideLock(path)
    assert fresh.acquire(block=False)
    late = SlideLock(path)
    late._break(b'{"the stale lock": "someone else broke and replaced"}')
    assert fresh._still_mine() and not list(tmp_path.glob("*.stale"))
    fresh.release()


def test_waiting_reports_the_holder_once(tmp_path):
    holder = SlideLock(tmp_path / ".a.lock")
    holder.acquire()
    waits = []
    threading.Timer(0.5, holder.release).start()
    waiter = SlideLock(tmp_path / ".a.lock")
    started = time.monotonic()
    assert waiter.acquire(poll_s=0.05, on_wait=waits.append)
    assert time.monotonic() - started >= 0.4
    assert len(waits) == 1 and waits[0].pid == os.getpid() and waiter.waited_for == waits[0]
    assert not SlideLock(tmp_path / ".a.lock").acquire(poll_s=0.05, timeout=0.2)
    waiter.release()


def test_heartbeat_keeps_a_long_run_fresh_and_a_broken_lock_is_noticed(tmp_path):
    lock = SlideLock(tmp_path / ".a.lock", heartbeat_s=0.05)
    lock.acquire()
    then = time.time() - 1000
    os.utime(lock.path, (then, then))
    time.sleep(0.3)
    assert time.time() - lock.path.stat().st_mtime < 5
    lock.path.unlink()  # someone judged it stale
    time.sleep(0.2)
    lock.release()
    assert lock.lost


def _contend(path, inside, rounds, failures):
    for _ in range(rounds):
        lock = SlideLock(path)
        lock.acquire(poll_s=0.005)
        try:
            try:
                fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                failures.value += 1
                continue
            os.close(fd)
            time.sleep(0.002)
            os.unlink(inside)
        finally:
            lock.release()


def test_processes_never_hold_it_together(tmp_path):
    context = multiprocessing.get_context("fork")
    failures = context.Value("i", 0)
    workers = [context.Process(target=_contend, args=(tmp_path / ".a.lock", tmp_path / "inside", 25, failures))
               for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0] * 6 and failures.value == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _grab(path, barrier, winners):
    barrier.wait()
    lock = SlideLock(path)
    if lock.acquire(block=False):
        with winners.get_lock():
            winners.value += 1
        time.sleep(1.0)  # hold it while the others try
        lock.release()


def test_one_of_many_takes_over_a_stale_lock(tmp_path):
    for attempt in range(3):
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        plant(tmp_path / ".a.lock", replace(Holder.me(), pid=dead.pid))
        context = multiprocessing.get_context("fork")
        barrier, winners = context.Barrier(6), context.Value("i", 0)
        workers = [context.Process(target=_grab, args=(tmp_path / ".a.lock", barrier, winners)) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert winners.value == 1 and not list(tmp_path.iterdir()), attempt


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_runs_on_one_slide_at_once(busy_model, tmp_path):
    args = ["detect", SAMPLE, "--model", busy_model, "--workers", "1"]
    clean = subprocess.run(["wsimito", *map(str, args), "-o", str(tmp_path / "clean"), "--quiet"],
                           capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "shared"
    runs = [subprocess.Popen(["wsimito", *map(str, args), "-o", str(out)], stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    said = "\n".join(errors)
    assert "waiting for" in said and "its result is used" in said, said
    rows = read_csv(out / "counts.csv")
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["error"] == ""
    drop = lambda rows: [{k: v for k, v in r.items() if k != "runtime_s"} for r in rows]  # noqa: E731
    assert drop(rows) == drop(read_csv(tmp_path / "clean/counts.csv"))
    assert read_csv(out / "detections.csv") == read_csv(tmp_path / "clean/detections.csv")
    assert int(rows[0]["mitoses"]) > 0
    from wsimito.outputs.zarr_store import is_complete, read_detections

    store = out / "CMU-1-Small-Region.zarr"
    assert is_complete(store) and len(read_detections(store)) >= int(rows[0]["mitoses"])
    features = json.loads((out / "CMU-1-Small-Region.geojson").read_text())["features"]
    assert sum(f["properties"]["objectType"] == "detection" for f in features) == int(rows[0]["mitoses"])
    assert sorted(p.name for p in out.iterdir()) == [
        "CMU-1-Small-Region.gallery.png", "CMU-1-Small-Region.geojson", "CMU-1-Small-Region.overlay.png",
        "CMU-1-Small-Region.zarr", "counts.csv", "detections.csv", "index.html"]
