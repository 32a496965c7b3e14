from agentscale.cli import main

main()
