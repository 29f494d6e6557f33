from dnn.cli import main

main(prog_name="dnn")
