from lpb_core.cli import main

main()
