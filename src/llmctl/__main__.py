import sys

if sys.argv[1:2] == ["wait-ready"]:
    # The readiness gate runs at every unit start: skip click and the CLI's modules.
    from llmctl.readiness import gate_main

    sys.exit(gate_main(sys.argv[2:]))

from llmctl.cli import main

sys.exit(main())
