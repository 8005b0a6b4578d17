"""Study 8 (resnet8) with the default search's accuracy band off (band=None: the whole front)."""
import functools
import os
import runpy
import sys

import moprune

moprune.search = functools.partial(moprune.search, band=None)
sys.argv = ["run.py", "--models", "resnet8", "--finetune", "20", "--threads", "2", "--out", os.path.dirname(os.path.abspath(__file__))]
runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "run.py"), run_name="__main__")
