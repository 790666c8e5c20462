"""Visual prompting: markers drawn on images and referring-expression evaluation."""
