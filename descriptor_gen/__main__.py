from descriptor_gen.entry import run

run()
