import sys

from llmctl.entry import main

sys.exit(main())
