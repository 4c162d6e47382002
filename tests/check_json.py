"""hotmod-check --json, as a CTest test: the document parses, has one object per file in
order, each finding with its name, what and fix, an error (and only an error) for a file that
cannot be used, and strings that survive quotes, backslashes, control characters and bytes
that are not UTF-8 in a file name.

usage: python3 check_json.py HOTMOD-CHECK CLEAN.so FINDING.so FINDING-NAME
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

check, clean, finding, name = sys.argv[1:5]
tmp = tempfile.mkdtemp()
try:
    weird = os.path.join(os.fsencode(tmp), b'we"ird\\name\n\t\x01\xff\xc3(.so')
    with open(weird, "wb") as f:
        f.write(b"not an ELF file")
    files = [os.fsencode(clean), os.fsencode(finding), weird, os.fsencode(tmp) + b"/none.so"]
    run = subprocess.run([os.fsencode(check), b"--json"] + files, stdout=subprocess.PIPE)
    print(run.stdout.decode("utf-8", "replace"))
    assert run.returncode == 2, run.returncode
    doc = json.loads(run.stdout.decode("utf-8"))  # strict: the output must be UTF-8
    assert isinstance(doc, list) and len(doc) == len(files), doc
    for entry, path in zip(doc, files):
        assert set(entry) >= {"file", "error", "findings"}, entry
        assert isinstance(entry["findings"], list)
    assert doc[0]["file"] == clean and doc[0]["error"] is None and doc[0]["findings"] == []
    assert doc[1]["error"] is None and len(doc[1]["findings"]) == 1, doc[1]
    f = doc[1]["findings"][0]
    assert f["name"] == name and f["what"] and f["fix"], f
    # The name is the file name with the byte that is not UTF-8 replaced.
    assert doc[2]["file"] == weird.decode("utf-8", "replace"), doc[2]["file"]
    assert doc[2]["error"] and doc[2]["code"] == "HM_ENOTELF" and doc[2]["findings"] == []
    assert doc[3]["code"] == "HM_ENOENT", doc[3]
    # No files with findings and nothing unusable: exit 0, an array of clean entries.
    run = subprocess.run([check, "--json", clean], stdout=subprocess.PIPE)
    assert run.returncode == 0 and json.loads(run.stdout)[0]["findings"] == []
finally:
    shutil.rmtree(tmp)
print("ok")
