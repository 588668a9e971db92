"""The gs:// workdir lock against an in-memory object store with Cloud Storage's generation
preconditions: one holder at a time, a one-line refusal naming it, release, takeover of a lock
whose heartbeat stopped, and a race for a stale lock that only one run wins."""

import json

import pytest

from research.errors import UserError
from research.training.locks import BucketLock, GcsStore, bucket_lock, claim_workdir
from research.training.paths import workdir_path


class MemoryStore:
    """Objects with generations; each conditional write or delete is atomic, as on the store."""

    def __init__(self):
        self.objects: dict[str, tuple[str, int]] = {}
        self.next_generation = 1

    def read(self, name):
        return self.objects.get(name)

    def write(self, name, data, *, if_generation):
        current = self.objects.get(name, (None, 0))[1]
        if current != if_generation:
            return None
        self.objects[name] = (data, self.next_generation)
        self.next_generation += 1
        return self.objects[name][1]

    def delete(self, name, *, if_generation):
        if self.objects.get(name, (None, 0))[1] == if_generation:
            del self.objects[name]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def lock(store, clock, lease=300.0):
    return BucketLock(store, "run/.lock", "gs://bucket/run", lease=lease, clock=clock)


def test_a_second_run_is_refused_in_one_line_naming_the_holder():
    store, clock = MemoryStore(), Clock()
    first = lock(store, clock)
    first.acquire()
    clock.now += 100  # within the lease
    with pytest.raises(UserError) as refused:
        lock(store, clock).acquire()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("--workdir gs://bucket/run is in use by pid ")
    assert "heartbeat 100 s ago" in message
    first.release()
    assert store.read("run/.lock") is None
    lock(store, clock).acquire()  # free again


def test_a_heartbeat_keeps_the_lock_and_a_silent_holder_is_taken_over(capsys):
    store, clock = MemoryStore(), Clock()
    first = lock(store, clock)
    first.acquire()
    clock.now += 250
    assert first.heartbeat()
    clock.now += 250  # 500 s since acquiring, 250 since the heartbeat: still held
    with pytest.raises(UserError, match="in use"):
        lock(store, clock).acquire()
    clock.now += 100  # 350 s without a heartbeat: the holder is presumed dead
    second = lock(store, clock)
    second.acquire()
    assert "taking over the lock of pid" in capsys.readouterr().err
    assert json.loads(store.read("run/.lock")[0])["heartbeat"] == clock.now
    assert not first.heartbeat()  # the old holder learns it has lost the lock
    first.release()  # and cannot delete the new holder's lock
    assert store.read("run/.lock") is not None


def test_two_runs_racing_for_a_stale_lock_cannot_both_win():
    store, clock = MemoryStore(), Clock()
    lock(store, clock).acquire()
    clock.now += 1000
    a, b = lock(store, clock), lock(store, clock)
    read = store.read

    def read_then_b_takes_over(name):  # b takes over between a's read and a's write
        found = read(name)
        store.read = read
        b.acquire()
        return found

    store.read = read_then_b_takes_over
    with pytest.raises(UserError, match="in use by another run that took over a stale lock"):
        a.acquire()
    assert b.heartbeat()


def test_an_unreadable_lock_object_counts_as_stale():
    store, clock = MemoryStore(), Clock()
    store.write("run/.lock", "not json", if_generation=0)
    lock(store, clock).acquire()


def test_claim_workdir_locks_a_bucket_workdir():
    store = MemoryStore()
    directory = workdir_path("gs://bucket/runs/a")
    with claim_workdir(directory, store):
        assert "runs/a/.lock" in store.objects
        with (
            pytest.raises(UserError, match="gs://bucket/runs/a is in use"),
            claim_workdir(directory, store),
        ):
            pass
    assert store.objects == {}


def test_only_gs_buckets_are_locked():
    with pytest.raises(UserError, match="only local folders and gs:// buckets"):
        bucket_lock("s3://bucket/run", MemoryStore())


class FakeGcsError(Exception):
    def __init__(self, code):
        super().__init__(f"HTTP {code}")
        self.code = code


class FakeBlob:
    """google-cloud-storage's Blob as far as GcsStore uses it, over a MemoryStore."""

    def __init__(self, memory, name):
        self.memory, self.name, self.generation = memory, name, None

    def download_as_text(self):
        found = self.memory.read(self.name)
        if found is None:
            raise FakeGcsError(404)
        data, self.generation = found
        return data

    def upload_from_string(self, data, if_generation_match):
        generation = self.memory.write(self.name, data, if_generation=if_generation_match)
        if generation is None:
            raise FakeGcsError(412)
        self.generation = generation

    def delete(self, if_generation_match):
        found = self.memory.read(self.name)
        if found is None:
            raise FakeGcsError(404)
        if found[1] != if_generation_match:
            raise FakeGcsError(412)
        self.memory.delete(self.name, if_generation=if_generation_match)


class FakeClient:
    def __init__(self):
        self.memory = MemoryStore()

    def bucket(self, name):
        client = self

        class Bucket:
            def blob(self, blob_name):
                return FakeBlob(client.memory, f"{name}/{blob_name}")

        return Bucket()


def test_gcs_store_maps_preconditions_and_missing_objects():
    store = GcsStore("bucket", client=FakeClient())
    assert store.read("a") is None
    generation = store.write("a", "x", if_generation=0)
    assert store.read("a") == ("x", generation)
    assert store.write("a", "y", if_generation=0) is None  # exists
    assert store.write("a", "y", if_generation=generation + 5) is None  # changed since
    store.delete("a", if_generation=generation + 5)  # not ours: left alone
    assert store.read("a") == ("x", generation)
    store.delete("a", if_generation=generation)
    assert store.read("a") is None
    store.delete("a", if_generation=generation)  # already gone: no error
    with pytest.raises(FakeGcsError):
        GcsStore("bucket", client=_failing_client()).read("a")


def _failing_client():
    class Failing(FakeBlob):
        def download_as_text(self):
            raise FakeGcsError(500)

    client = FakeClient()
    client.bucket = lambda name: type("B", (), {"blob": lambda self, n: Failing(None, n)})()
    return client
