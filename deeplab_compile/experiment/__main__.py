"""``python -m deeplab_compile.experiment``: what run_experiment.sh runs."""
import sys

from .driver import main

sys.exit(main())
