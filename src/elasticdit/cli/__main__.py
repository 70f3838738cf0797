"""`python -m elasticdit.cli`."""

from . import main

main()
