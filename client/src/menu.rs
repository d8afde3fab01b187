//! The interactive menu `dupla` opens when started in a terminal without a
//! command: a numbered list on stdout, answers read line by line from stdin.
//! Each choice asks for what it needs and runs the same code as the
//! matching subcommand; a failure is printed and the menu comes back.

use crate::cli::{BenchArgs, Command, RegisterArgs, DEFAULT_BENCH_SIZE, DEFAULT_TIME_SAMPLES};
use crate::output::print_error;
use crate::App;
use std::io::Write;
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

/// The choices, as printed.
const MENU: &str = concat!(
    "  1) back up files or directories (records a snapshot)\n",
    "  2) restore a file\n",
    "  3) list backed-up files\n",
    "  4) cluster status\n",
    "  5) remove a file from the catalog\n",
    "  6) hello\n",
    "  7) time (compare clocks with the manager)\n",
    "  8) benchmark (upload and download generated files)\n",
    "  9) register an account\n",
    " 10) log in\n",
    " 11) log out\n",
    " 12) delete my account\n",
    " 13) who am I\n",
    " 14) chat (#exit comes back here)\n",
    " 15) list snapshots\n",
    " 16) restore a snapshot into a directory\n",
    " 17) servers: list, or launch, drain, retire (admins)\n",
    "  0) quit",
);

/// Lines typed by the user.
struct Input(Lines<BufReader<Stdin>>);

impl Input {
    /// Print `question` and read one answer; `None` at end of input.
    async fn ask(&mut self, question: &str) -> anyhow::Result<Option<String>> {
        print!("{question}");
        std::io::stdout().flush()?;
        Ok(self
            .0
            .next_line()
            .await?
            .map(|line| line.trim().to_string()))
    }
}

/// Run the menu until the user quits or input ends.
pub async fn run(app: &App) -> anyhow::Result<()> {
    let mut app = app.clone();
    let mut input = Input(BufReader::new(tokio::io::stdin()).lines());
    println!(
        "dupla: manager {}, client root {}",
        app.config.manager,
        app.config.root.display()
    );
    loop {
        println!("\n{MENU}");
        if !app.client.has_token() {
            println!("(not logged in: backups belong to accounts; 9 registers, 10 logs in)");
        }
        let Some(choice) = input.ask("choose: ").await? else {
            println!();
            return Ok(());
        };
        let command = match choose(&choice, &mut input, &app).await? {
            Choice::Quit => return Ok(()),
            Choice::Nothing => continue,
            // The chat reads the same input as the menu, so no line is lost.
            Choice::Chat => {
                if let Err(err) = crate::chat::run(&app.client, &mut input.0, true).await {
                    print_error(&err);
                }
                continue;
            }
            Choice::Run(command) => command,
        };
        let session_changes = matches!(
            command,
            Command::Login { .. } | Command::Logout | Command::Unregister { .. }
        );
        if let Err(err) = app.execute(command).await {
            print_error(&err);
        }
        if session_changes {
            app = app.reloaded();
        }
    }
}

/// What a menu answer amounts to.
enum Choice {
    Run(Command),
    Chat,
    Nothing,
    Quit,
}

/// Turn a menu number (and the follow-up answers) into a command.
async fn choose(choice: &str, input: &mut Input, app: &App) -> anyhow::Result<Choice> {
    let root = app.config.root.display().to_string();
    let command = match choice {
        // Quit: also accept the words people type.
        "0" | "q" | "quit" | "exit" => return Ok(Choice::Quit),
        // Back up files and directories, named relative to the root.
        "1" => {
            let question = format!("files or directories to back up (inside {root}): ");
            match answer(input, &question).await? {
                Some(paths) => Command::Backup {
                    paths: paths.split_whitespace().map(PathBuf::from).collect(),
                    resume: false,
                    excludes: Vec::new(),
                    exclude_files: Vec::new(),
                    tags: Vec::new(),
                    dry_run: false,
                },
                None => return Ok(Choice::Nothing),
            }
        }
        // Restore: name, then an optional destination.
        "2" => {
            let Some(name) = answer(input, "name to restore (as listed): ").await? else {
                return Ok(Choice::Nothing);
            };
            let default = app.config.root.join(&name);
            let question = format!("destination [{}]: ", default.display());
            let output = answer(input, &question).await?.map(PathBuf::from);
            let snapshot = answer(input, "from snapshot [latest version]: ").await?;
            Command::Restore {
                names: vec![name],
                output,
                snapshot,
                target: None,
            }
        }
        "15" => Command::Snapshots { paths: Vec::new() },
        // A whole snapshot into a directory inside the root.
        "16" => {
            let Some(snapshot) = answer(input, "snapshot id (or latest): ").await? else {
                return Ok(Choice::Nothing);
            };
            let Some(target) = answer(input, &format!("into directory (inside {root}): ")).await?
            else {
                return Ok(Choice::Nothing);
            };
            Command::Restore {
                names: Vec::new(),
                output: None,
                snapshot: Some(snapshot),
                target: Some(PathBuf::from(target)),
            }
        }
        // List, optionally filtered.
        "3" => Command::Ls {
            pattern: answer(input, "pattern (empty for all): ")
                .await?
                .unwrap_or_default(),
        },
        "4" => Command::Status,
        // Remove, after a confirmation.
        "5" => {
            let Some(name) = answer(input, "name to remove: ").await? else {
                return Ok(Choice::Nothing);
            };
            let sure = answer(input, &format!("remove {name} from the catalog? [y/N] ")).await?;
            if !matches!(sure.as_deref(), Some("y" | "Y" | "yes")) {
                println!("kept {name}");
                return Ok(Choice::Nothing);
            }
            Command::Rm { name }
        }
        // Hello: names separated by spaces.
        "6" => match answer(input, "names, separated by spaces: ").await? {
            Some(names) => Command::Hello {
                names: names.split_whitespace().map(String::from).collect(),
            },
            None => return Ok(Choice::Nothing),
        },
        "7" => Command::Time {
            samples: DEFAULT_TIME_SAMPLES,
        },
        // Bench: size and count, with the defaults of `dupla bench`.
        "8" => {
            let size = answer(
                input,
                &format!("size of each file [{DEFAULT_BENCH_SIZE}]: "),
            )
            .await?
            .unwrap_or_else(|| DEFAULT_BENCH_SIZE.to_string());
            let size = match dupla::size::parse_size(&size) {
                Ok(size) => size,
                Err(e) => {
                    println!("{e}");
                    return Ok(Choice::Nothing);
                }
            };
            let count = answer(input, "number of files [1]: ").await?;
            let Ok(count) = count.as_deref().unwrap_or("1").parse::<u32>() else {
                println!("the number of files is a whole number");
                return Ok(Choice::Nothing);
            };
            Command::Bench(BenchArgs {
                target: None,
                size,
                count: count.max(1),
                concurrency: 1,
                download: true,
            })
        }
        "9" => match register_answers(input).await? {
            Some(args) => Command::Register(args),
            None => return Ok(Choice::Nothing),
        },
        // Log in: the password is asked without echo by the command.
        "10" => match answer(input, "login: ").await? {
            Some(user) => Command::Login {
                user,
                password_stdin: false,
            },
            None => return Ok(Choice::Nothing),
        },
        "11" => Command::Logout,
        "12" => Command::Unregister {
            password_stdin: false,
        },
        "13" => Command::Whoami,
        "14" => return Ok(Choice::Chat),
        // Servers: nothing lists them; the admin's actions take an id.
        "17" => {
            let question = "empty to list, or launch, drain ID, retire ID: ";
            let words = answer(input, question).await?.unwrap_or_default();
            let words: Vec<&str> = words.split_whitespace().collect();
            let action = match words.as_slice() {
                [] => None,
                ["launch"] => Some(crate::cli::ServersAction::Launch),
                ["drain", id] => Some(crate::cli::ServersAction::Drain { id: id.to_string() }),
                ["retire", id] => Some(crate::cli::ServersAction::Retire { id: id.to_string() }),
                _ => {
                    println!("expected launch, drain ID or retire ID");
                    return Ok(Choice::Nothing);
                }
            };
            Command::Servers { action }
        }
        "" => return Ok(Choice::Nothing),
        other => {
            println!("{other:?} is not on the menu; type a number from 0 to 17");
            return Ok(Choice::Nothing);
        }
    };
    Ok(Choice::Run(command))
}

/// The fields of a registration; the password is asked (without echo)
/// by the command itself. `None` if the user gave up.
async fn register_answers(input: &mut Input) -> anyhow::Result<Option<RegisterArgs>> {
    let mut fields = Vec::new();
    for question in [
        "login (3-32 of a-z 0-9 _ . -): ",
        "first names: ",
        "last names: ",
        "age: ",
        "gender: ",
    ] {
        match answer(input, question).await? {
            Some(value) => fields.push(value),
            None => return Ok(None),
        }
    }
    let age = match crate::account::parse_age(&fields[3]) {
        Ok(age) => age,
        Err(e) => {
            println!("{e}");
            return Ok(None);
        }
    };
    Ok(Some(RegisterArgs {
        login: Some(fields[0].clone()),
        first_names: Some(fields[1].clone()),
        last_names: Some(fields[2].clone()),
        age: Some(age),
        gender: Some(fields[4].clone()),
        password_stdin: false,
    }))
}

/// Ask, and treat an empty answer or end of input as "no answer".
async fn answer(input: &mut Input, question: &str) -> anyhow::Result<Option<String>> {
    Ok(input.ask(question).await?.filter(|a| !a.is_empty()))
}
