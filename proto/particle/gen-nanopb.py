#!/usr/bin/env python3
"""Runs nanopb's generator on Particle's .proto files and writes the .pb.c/.pb.h
files flat into one output directory (meson outputs cannot live in
subdirectories; the generated #includes are made flat too).

usage: gen-nanopb.py OUTDIR PROTO_ROOT OPTIONS_FILE PROTO..."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

outdir, root, options = (os.path.abspath(a) for a in sys.argv[1:4])
protos = [os.path.abspath(p) for p in sys.argv[4:]]
generator = shutil.which('nanopb_generator.py') or shutil.which('nanopb_generator')
if not generator:
    sys.exit('gen-nanopb: nanopb_generator.py not found (Debian package nanopb: scripts/install-deps)')
with tempfile.TemporaryDirectory() as tmp:
    rel = [os.path.relpath(p, root) for p in protos]
    subprocess.run([generator, '-q', '--strip-path', '-I', root, '-f', options, '-D', tmp, *rel],
                   check=True, cwd=root)
    for r in rel:
        base = os.path.splitext(r)[0]
        for ext in ('.pb.c', '.pb.h'):
            with open(os.path.join(tmp, base + ext)) as f:
                text = f.read()
            # imports keep their directory ("control/extensions.pb.h"): flatten them
            text = re.sub(r'#include "(?:[^"/]+/)+([^"/]+\.pb\.h)"', r'#include "\1"', text)
            with open(os.path.join(outdir, os.path.basename(base) + ext), 'w') as f:
                f.write(text)
