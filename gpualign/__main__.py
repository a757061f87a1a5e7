from gpualign.cli import main

main()
