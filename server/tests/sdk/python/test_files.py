"""Files through the unmodified SDK: write and read (text, bytes, streams,
gzip, several at once), list with depth, exists, info, make_dir, rename,
remove, watch_dir, and the signed upload/download URLs."""

import io
import time

import httpx
import pytest
from e2b import FileType, FilesystemEventType
from e2b.exceptions import NotFoundException


def test_write_and_read_text_and_bytes(sandbox):
    info = sandbox.files.write("notes/a.txt", "héllo")
    assert info.path == "/home/user/notes/a.txt" and info.name == "a.txt"
    assert sandbox.files.read("notes/a.txt") == "héllo"
    blob = bytes(range(256)) * 1000
    sandbox.files.write("/tmp/blob.bin", blob)
    assert bytes(sandbox.files.read("/tmp/blob.bin", format="bytes")) == blob
    # The sandbox sees what the API wrote, owned by the user.
    assert sandbox.commands.run("stat -c '%U %s' /tmp/blob.bin").stdout == f"user {len(blob)}\n"


def test_streams_and_gzip(sandbox):
    payload = b"0123456789abcdef" * 100_000
    sandbox.files.write("/tmp/streamed", io.BytesIO(payload))
    stream = sandbox.files.read("/tmp/streamed", format="stream")
    assert b"".join(stream) == payload
    sandbox.files.write("/tmp/gz", payload, gzip=True)
    assert bytes(sandbox.files.read("/tmp/gz", format="bytes", gzip=True)) == payload


def test_write_many(sandbox):
    infos = sandbox.files.write_files(
        [
            {"path": "/tmp/many/one.txt", "data": "1"},
            {"path": "/tmp/many/two.txt", "data": b"2"},
            {"path": "rel.txt", "data": "3"},
        ]
    )
    assert sorted(i.path for i in infos) == ["/home/user/rel.txt", "/tmp/many/one.txt", "/tmp/many/two.txt"]
    assert sandbox.commands.run("cat /tmp/many/one.txt /tmp/many/two.txt ~/rel.txt").stdout == "123"


def test_list_with_depth_exists_and_info(sandbox):
    sandbox.commands.run("mkdir -p /tmp/tree/a/b && echo x > /tmp/tree/a/b/deep && echo y > /tmp/tree/top")
    shallow = sandbox.files.list("/tmp/tree")
    assert sorted(e.name for e in shallow) == ["a", "top"]
    deep = sandbox.files.list("/tmp/tree", depth=3)
    assert sorted(e.path for e in deep) == ["/tmp/tree/a", "/tmp/tree/a/b", "/tmp/tree/a/b/deep", "/tmp/tree/top"]
    assert sandbox.files.exists("/tmp/tree/top")
    assert not sandbox.files.exists("/tmp/tree/nope")
    info = sandbox.files.get_info("/tmp/tree/top")
    assert info.type == FileType.FILE and info.size == 2
    assert info.permissions == "-rw-r--r--" and info.owner == "user" and info.group == "user"
    d = sandbox.files.get_info("/tmp/tree/a")
    assert d.type == FileType.DIR and d.permissions.startswith("d")


def test_make_dir_rename_remove(sandbox):
    assert sandbox.files.make_dir("/tmp/d/e") is True
    assert sandbox.files.make_dir("/tmp/d/e") is False
    sandbox.files.write("/tmp/d/e/f", "data")
    moved = sandbox.files.rename("/tmp/d/e/f", "/tmp/d/g")
    assert moved.path == "/tmp/d/g"
    assert sandbox.files.read("/tmp/d/g") == "data"
    sandbox.files.remove("/tmp/d")
    assert not sandbox.files.exists("/tmp/d")
    with pytest.raises(NotFoundException):
        sandbox.files.read("/tmp/d/g")


def test_watch_dir(sandbox):
    sandbox.files.make_dir("/tmp/watched")
    handle = sandbox.files.watch_dir("/tmp/watched", recursive=True)
    try:
        sandbox.files.write("/tmp/watched/new.txt", "x")
        sandbox.commands.run("mkdir /tmp/watched/sub && echo y > /tmp/watched/sub/inner && rm /tmp/watched/new.txt")
        events = []
        deadline = time.time() + 5
        while time.time() < deadline:
            events += handle.get_new_events()
            names = {(e.name, e.type) for e in events}
            if ("sub/inner", FilesystemEventType.CREATE) in names and ("new.txt", FilesystemEventType.REMOVE) in names:
                break
            time.sleep(0.1)
        names = {(e.name, e.type) for e in events}
        assert ("new.txt", FilesystemEventType.CREATE) in names
        assert ("new.txt", FilesystemEventType.REMOVE) in names
        assert ("sub/inner", FilesystemEventType.CREATE) in names
    finally:
        handle.stop()


def test_signed_upload_and_download_urls(sandbox):
    upload = sandbox.upload_url("/tmp/via-url.txt")
    r = httpx.post(upload, files={"file": ("via-url.txt", b"uploaded through a URL")})
    assert r.status_code == 200, r.text
    download = sandbox.download_url("/tmp/via-url.txt")
    r = httpx.get(download)
    assert r.status_code == 200 and r.content == b"uploaded through a URL"
    assert r.headers["content-type"].startswith("text/plain")
    # A URL signed for another path, or tampered with, is refused.
    r = httpx.get(download.replace("via-url.txt", "other.txt"))
    assert r.status_code == 401
    expired = sandbox.download_url("/tmp/via-url.txt", use_signature_expiration=-10)
    assert httpx.get(expired).status_code == 401
