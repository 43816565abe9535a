#!/usr/bin/env python3
"""Runs the official ONNX checker (full check, with shape inference) on each model given.

usage: check_onnx.py MODEL.onnx [...]   exit 0 when every model passes; the error otherwise.
"""
import sys

import onnx

for path in sys.argv[1:]:
    onnx.checker.check_model(path, full_check=True)
    print(f"ok {path}")
