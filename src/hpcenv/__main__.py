from hpcenv.cli import main

main()
