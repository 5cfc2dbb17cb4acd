from rtpcluster.cli.app import main

main()
