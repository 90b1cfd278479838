#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (FUZZING.md).

Seeds are the example payloads cut to a few rows (libFuzzer mutates small inputs best),
small hand-written bodies for the fuzz signatures, header values for content negotiation, and
tar archives made with tarfile: ordinary ones and hostile ones (paths and links that leave the
folder, devices, a decompression bomb). Run from the repository root; standard library only.
"""

import gzip
import io
import json
import os
import shutil
import struct
import tarfile

# Pad archives to the two zero blocks that end them, not to 10 KiB: small seeds fuzz faster.
tarfile.RECORDSIZE = 2 * tarfile.BLOCKSIZE

PAYLOADS = "examples/gender/payloads"
OUT = "fuzz/corpus"


def put(target, name, data):
    os.makedirs(f"{OUT}/{target}", exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(f"{OUT}/{target}/{name}", "wb") as f:
        f.write(data)


def lines(path, n):
    with open(path, "rb") as f:
        return b"".join(f.readlines()[:n])


def npy_rows(path, n):
    """The first n rows of a 2-D .npy file, with its header rewritten."""
    with open(path, "rb") as f:
        raw = f.read()
    hlen = struct.unpack("<H", raw[8:10])[0]
    header = raw[10 : 10 + hlen].decode("latin1")
    descr = header.split("'descr': '")[1].split("'")[0]
    shape = header.split("'shape': (")[1].split(")")[0]
    width = int(shape.split(",")[1])
    size = int(descr[2:])
    return npy(descr, f"({n}, {width})", raw[10 + hlen : 10 + hlen + n * width * size])


def npy(descr, shape, data):
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


def payload_seeds():
    for model in ("logreg", "pipeline"):
        d = f"{PAYLOADS}/{model}"
        put("decode_csv", f"{model}_rows.csv", lines(f"{d}/rows.csv", 2))
        put("decode_csv", f"{model}_header.csv", lines(f"{d}/rows_header.csv", 3))
        put("decode_jsonl", f"{model}_rows.jsonl", lines(f"{d}/rows.jsonl", 2))
        put("decode_jsonl", f"{model}_records.jsonl", lines(f"{d}/records.jsonl", 2))
        put("records", f"{model}_rows.csv", lines(f"{d}/rows.csv", 2))
        put("records", f"{model}_records.jsonl", lines(f"{d}/records.jsonl", 2))
        for name in ("bare", "instances", "records"):
            with open(f"{d}/{name}.json") as f:
                body = json.load(f)
            if isinstance(body, dict):
                body["instances"] = body["instances"][:2]
            else:
                body = body[:2]
            put("decode_json", f"{model}_{name}.json", json.dumps(body))
    with open(f"{PAYLOADS}/pipeline/inputs.json") as f:
        body = json.load(f)
    body["inputs"] = {k: v[:2] for k, v in body["inputs"].items()}
    put("decode_json", "pipeline_inputs.json", json.dumps(body))
    for dt in ("f32", "f64"):
        put("decode_npy", f"logreg_{dt}.npy", npy_rows(f"{PAYLOADS}/logreg/rows_{dt}.npy", 2))


def small_seeds():
    """Bodies for the small fuzz signatures (tensor3: a, b, c; mixed: one of each type)."""
    csv = {
        "tensor3.csv": "1,2,3\n4.5,-6e3,7\n",
        "tensor3_header.csv": "c,a,b\n1,2,3\n",
        "tensor3_quoted.csv": '"1","2",3\r\n4,5,6\r\n',
        "mixed.csv": 'Paris,2,1.5,2.25,3,true\n"S\xc3\xa3o, Paulo",-1,NaN,1e-300,-7,0\n',
        "mixed_header.csv": "flag,count,score,hours,tier,city\n1,2,3,4,5,x\n",
        "bad.csv": "1,2\n1,x,3\n",
    }
    for name, body in csv.items():
        put("decode_csv", name, body)
        if "header" not in name and '"' not in body:
            put("records", name, body)
    jsonl = {
        "tensor3.jsonl": '[1,2,3]\n{"a":1,"b":2,"c":3}\n\n',
        "mixed.jsonl": '{"city":"x","tier":1,"hours":2,"score":3,"count":4,"flag":true}\n["y",1,2,3,4,false]\n',
        "bad.jsonl": '[1,2,3]\n[1,\n{"a":1}\n',
    }
    for name, body in jsonl.items():
        put("decode_jsonl", name, body)
        put("records", name, body)
    json_bodies = {
        "tensor3_instances.json": '{"instances": [[1,2,3],[4,5,6]]}',
        "tensor3_records.json": '[{"a":1,"b":2.5,"c":-3e2}]',
        "tensor3_inputs.json": '{"inputs": {"input": [[1,2,3]]}}',
        "mixed_inputs.json": '{"inputs": {"city":["x"],"tier":[1],"hours":[[2]],"score":[3],"count":[4],"flag":[true]}}',
        "escapes.json": '{"instances": [["\\u00e9\\n\\"", 1, 1.0, 1e308, 2147483647, false]]}',
    }
    for name, body in json_bodies.items():
        put("decode_json", name, body)
    put("decode_npy", "tensor3_f4.npy", npy("<f4", "(2, 3)", struct.pack("<6f", *range(6))))
    put("decode_npy", "tensor3_1d_i8.npy", npy("<i8", "(3,)", struct.pack("<3q", 1, 2, 3)))
    put("decode_npy", "bool.npy", npy("|b1", "(1, 3)", b"\x01\x00\x01"))
    put("decode_npy", "truncated.npy", npy("<f8", "(2, 3)", b"\x00" * 20))


def media_seeds():
    # flags byte, then Content-Type, default type, Accept, default accept, body prefix.
    rows = [
        (1, "text/csv", "application/json", "application/json", "application/json", "1,2"),
        (0, "text/csv; header=present", "text/csv", "text/csv;q=0.5, application/json", "text/csv", ""),
        (0, "application/octet-stream", "text/csv", "*/*", "application/jsonlines", "\x93NUMPY"),
        (0, "", "application/jsonlines", "application/*;q=0.9, text/*", "text/csv", "{"),
        (0, "APPLICATION/X-NPY", "text/csv", "application/xml, application/jsonlines; q=0", "json", ""),
        (0, "application/json; charset=utf-8", "bogus", "text/html", "application/json", "["),
    ]
    for i, (flags, *parts) in enumerate(rows):
        put("media", f"headers_{i}", bytes([flags]) + "\n".join(parts).encode())


def tar_bytes(members, gz=False):
    """members: (TarInfo, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return buf.getvalue()


def entry(name, kind=tarfile.REGTYPE, link="", data=None):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, data


def archive_seeds():
    model = b"\x08\x07" + b"onnx" * 16
    cfg = b'{"class_labels": ["female", "male"]}'
    good = [
        entry("./", tarfile.DIRTYPE),
        entry("model.onnx", data=model),
        entry("mlapp.json", data=cfg),
        entry("sub/", tarfile.DIRTYPE),
        entry("sub/extra.txt", data=b"x\n"),
        entry("current", tarfile.SYMTYPE, "sub/extra.txt"),
        entry("again.onnx", tarfile.LNKTYPE, "model.onnx"),
    ]
    seeds = {
        "good.tar": tar_bytes(good),
        "good.tar.gz": tar_bytes(good, gz=True),
        "empty.tar": tar_bytes([]),
        "long_name.tar": tar_bytes([entry("d/" + "n" * 150 + ".onnx", data=model)]),
        "dotdot.tar": tar_bytes([entry("../escaped", data=b"x")]),
        "nested_dotdot.tar.gz": tar_bytes([entry("a/../../escaped", data=b"x")], gz=True),
        "absolute.tar": tar_bytes([entry("/tmp/escaped", data=b"x")]),
        "symlink_abs.tar": tar_bytes([entry("evil", tarfile.SYMTYPE, "/etc")]),
        "symlink_up.tar": tar_bytes([entry("evil", tarfile.SYMTYPE, "../..")]),
        "symlink_then_write.tar": tar_bytes(
            [entry("evil", tarfile.SYMTYPE, ".."), entry("evil/escaped", data=b"x")]
        ),
        "symlink_chain.tar": tar_bytes(
            [
                entry("a/", tarfile.DIRTYPE),
                entry("a/up", tarfile.SYMTYPE, "."),
                entry("b", tarfile.SYMTYPE, "a/up"),
                entry("b/file", data=b"x"),
            ]
        ),
        "hardlink_out.tar": tar_bytes([entry("evil", tarfile.LNKTYPE, "../../etc/passwd")]),
        "hardlink_dir.tar": tar_bytes(
            [entry("d/", tarfile.DIRTYPE), entry("h", tarfile.LNKTYPE, "d")]
        ),
        "fifo.tar": tar_bytes([entry("pipe", tarfile.FIFOTYPE)]),
        "chardev.tar": tar_bytes([entry("null", tarfile.CHRTYPE)]),
        "many_files.tar.gz": tar_bytes(
            [entry(f"f{i}", data=b"") for i in range(40)], gz=True
        ),
        "bomb.tar.gz": tar_bytes([entry("zeros", data=b"\x00" * (300 << 10))], gz=True),
        "overwrite.tar": tar_bytes(
            [entry("m", data=b"first"), entry("m", data=b"second"), entry("m/", tarfile.DIRTYPE)]
        ),
    }
    for name, data in seeds.items():
        put("archive", name, data)
    # Two gzip members back to back (MultiGzDecoder reads both).
    put("archive", "multi_member.tar.gz", gzip.compress(seeds["good.tar"][:1024]) + gzip.compress(seeds["good.tar"][1024:]))


if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    payload_seeds()
    small_seeds()
    media_seeds()
    archive_seeds()
