from llmctl.entry import run

run()
