"""`workbench doctor`: what this machine will run, each problem with its fix; `--run` proves it.

A front door: `facts` reads the machine (device, installed builds, the engine arguments
chosen here), `problems` judges them, `report` prints them (or JSON), `selftest` runs a
small batch job and a phased job on the embedded models and measures them.
"""
