import sys

from research_agents.cli import main

sys.exit(main())
