from loadtester.cli import main

main()
