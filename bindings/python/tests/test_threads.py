"""One Snapshotter shared by many threads."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import erofs_snapshotter as es

THREADS = 8


def test_threads_share_one_handle(root: Path) -> None:
    records: list[str] = []
    log_threads: set[str] = set()

    def log(level: int, message: str) -> None:
        log_threads.add(threading.current_thread().name)
        records.append(message)

    with es.Snapshotter({"root": str(root)}, logger=log, log_level=logging.DEBUG) as snap:
        _share(snap)
    # Every thread's operations reached the one Python logger.
    assert len(log_threads) >= THREADS
    assert sum(m.startswith("commit ") for m in records) == THREADS + 1


def _share(snap: es.Snapshotter) -> None:
    snap.prepare("base-active")
    with snap.mounted("base-active") as p:
        (p / "shared").write_text("base")
    snap.commit("base", "base-active")
    start = threading.Barrier(THREADS)

    def worker(n: int) -> str:
        start.wait()
        key, name = f"work-{n}", f"layer-{n}"
        snap.prepare(key, "base", labels={"worker": str(n)})
        with snap.mounted(key) as p:
            assert (p / "shared").read_text() == "base"
            (p / f"file-{n}").write_text(str(n))
        snap.commit(name, key, labels={"worker": str(n)})
        try:
            snap.prepare(key, "base")  # the key is free again after commit
            snap.prepare(key, "base")
        except es.AlreadyExistsError:
            pass
        snap.remove(key)
        snap.view(f"view-{n}", name)
        with snap.mounted(f"view-{n}") as p:
            got = (p / f"file-{n}").read_text()
        assert snap.stat(name).labels == {"worker": str(n)}
        assert [i.name for i in snap.walk(f"labels.worker=={n}")] == [name]
        try:
            snap.stat(f"missing-{n}")
        except es.NotFoundError:
            pass
        snap.remove(f"view-{n}")
        snap.remove(name)
        return got

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS)))
    assert results == [str(n) for n in range(THREADS)]
    assert [i.name for i in snap.walk()] == ["base"]


def test_close_waits_for_calls_in_progress(root: Path) -> None:
    s = es.Snapshotter({"root": str(root)})
    stop = threading.Event()
    errors: list[BaseException] = []
    calls = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                s.walk()
                calls[0] += 1
            except es.FailedPreconditionError as e:
                assert "closed" in str(e)
                return
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    s.close()  # concurrent callers must not use a freed handle
    stop.set()
    for t in threads:
        t.join()
    assert not errors and calls[0] > 0
