from streamrec.cli import main

if __name__ == "__main__":  # spawned worker processes (bench) import this module again
    main()
