from gainbench.cli import main

main()
