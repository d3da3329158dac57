# fish completion for aims-api (made by `aims-api completions fish`)
complete -c aims-api -f
complete -c aims-api -n __fish_use_subcommand -s h -l help -d 'print help'
complete -c aims-api -n __fish_use_subcommand -s V -l version -d 'print the version'
complete -c aims-api -n __fish_use_subcommand -a serve -d 'run the appliance'
complete -c aims-api -n __fish_use_subcommand -a key -d 'show, generate, replace or revoke the API key'
complete -c aims-api -n __fish_use_subcommand -a snapshot -d 'import, pull, list, export, delete or verify the dated analysis snapshots'
complete -c aims-api -n __fish_use_subcommand -a check-config -d 'check a configuration file and exit'
complete -c aims-api -n __fish_use_subcommand -a diagnose -d 'check the configuration, state, certificate, server and system; say what to do'
complete -c aims-api -n __fish_use_subcommand -a completions -d 'print the shell completion script for bash, zsh or fish'
complete -c aims-api -n '__fish_seen_subcommand_from serve' -s c -l config -r -F -d 'configuration file'
complete -c aims-api -n '__fish_seen_subcommand_from serve' -s h -l help -d 'print this help'
complete -c aims-api -n '__fish_seen_subcommand_from serve' -s V -l version -d 'print the version'
complete -c aims-api -n '__fish_seen_subcommand_from key' -a status
complete -c aims-api -n '__fish_seen_subcommand_from key' -a generate
complete -c aims-api -n '__fish_seen_subcommand_from key' -a replace
complete -c aims-api -n '__fish_seen_subcommand_from key' -a revoke
complete -c aims-api -n '__fish_seen_subcommand_from key' -a clients
complete -c aims-api -n '__fish_seen_subcommand_from key' -a check
complete -c aims-api -n '__fish_seen_subcommand_from key' -a export-record
complete -c aims-api -n '__fish_seen_subcommand_from key' -a install-record
complete -c aims-api -n '__fish_seen_subcommand_from key; and __fish_seen_subcommand_from install-record' -F
complete -c aims-api -n '__fish_seen_subcommand_from key' -l expires-in -r -d 'generate, replace the new key expires after DURATION'
complete -c aims-api -n '__fish_seen_subcommand_from key' -l grace -r -d 'replace keep admitting the old key for DURATION'
complete -c aims-api -n '__fish_seen_subcommand_from key' -s o -l output -r -d 'export-record write the record to FILE'
complete -c aims-api -n '__fish_seen_subcommand_from key' -l force -d 'install-record install even an older record, or one that'
complete -c aims-api -n '__fish_seen_subcommand_from key' -s c -l config -r -F -d 'configuration file whose admin.listen to use'
complete -c aims-api -n '__fish_seen_subcommand_from key' -l json -d 'print the admin ports JSON answer as it is'
complete -c aims-api -n '__fish_seen_subcommand_from key' -s h -l help -d 'print this help'
complete -c aims-api -n '__fish_seen_subcommand_from key' -s V -l version -d 'print the version'
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -a import
complete -c aims-api -n '__fish_seen_subcommand_from snapshot; and __fish_seen_subcommand_from import' -F
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -a pull
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -a list
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -a export
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -a delete
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -a verify
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -s d -l date -r -d 'the analysis date of the imported file'
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -s o -l output -r -d 'export write the snapshot to FILE instead of standard output'
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -s c -l config -r -F -d 'configuration file whose admin.listen'
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -l json -d 'print the admin ports JSON answer as it is'
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -s h -l help -d 'print this help'
complete -c aims-api -n '__fish_seen_subcommand_from snapshot' -s V -l version -d 'print the version'
complete -c aims-api -n '__fish_seen_subcommand_from check-config' -s c -l config -r -F -d 'configuration file'
complete -c aims-api -n '__fish_seen_subcommand_from check-config' -s h -l help -d 'print this help'
complete -c aims-api -n '__fish_seen_subcommand_from check-config' -s V -l version -d 'print the version'
complete -c aims-api -n '__fish_seen_subcommand_from diagnose' -s c -l config -r -F -d 'configuration file'
complete -c aims-api -n '__fish_seen_subcommand_from diagnose' -l json -d 'print the checks as JSON'
complete -c aims-api -n '__fish_seen_subcommand_from diagnose' -l strict -d 'warnings fail too'
complete -c aims-api -n '__fish_seen_subcommand_from diagnose' -s h -l help -d 'print this help'
complete -c aims-api -n '__fish_seen_subcommand_from diagnose' -s V -l version -d 'print the version'
complete -c aims-api -n '__fish_seen_subcommand_from completions' -a bash
complete -c aims-api -n '__fish_seen_subcommand_from completions' -a zsh
complete -c aims-api -n '__fish_seen_subcommand_from completions' -a fish
complete -c aims-api -n '__fish_seen_subcommand_from completions' -s h -l help -d 'print this help'
complete -c aims-api -n '__fish_seen_subcommand_from completions' -s V -l version -d 'print the version'
