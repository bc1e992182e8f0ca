from sentiwire.cli import main

main()
