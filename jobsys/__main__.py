from jobsys.cli import main

main()
